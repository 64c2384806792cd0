"""Find the first wrong step of a wrong solution by Monte Carlo rollouts (`mathpo pairs --kind step`).

Let v_j be the chance that the model, continuing from the question plus the first j steps of the
solution, reaches the gold answer. v_0 > 0 is known from the question's own correct samples and
v_n = 0 (the solution is wrong; one cut off before its final answer is not known to be, so its
whole text is rolled out as prefix n too, and if that still reaches the gold answer no step is
wrong: `cut_off_no_wrong_step`). Rollouts are graded with their `finish`: one cut at the token
limit has not reached the answer. The first wrong step is the first j whose prefix makes success
impossible for the model: v_j = 0, estimated by `rollouts` continuations from that prefix, or
(with `margin`) the first j where the estimate falls by more than `margin` below v_{j-1}.

Search, with as few rollouts as possible:
- `binary` (default): bisect j between the last prefix known solvable and the first known
  unsolvable (v assumed to stay 0 once it is 0), about log2(n) prefixes per solution;
- `linear`: prefixes 1, 2, ... until the error (needed for `margin`, which compares neighbours).
Early stop: rollouts are drawn `chunk` at a time and a prefix stops as soon as one reaches the
gold answer (v_j > 0 is then certain), except under `margin`, which needs the full estimate.
All solutions advance together, so each round is one batched `backend.generate` call.
Continuations that reached the gold answer are kept per prefix: rectification reuses them.
With `probe_unsolved`, a question without a correct sample first gets rollouts from the bare
prompt (prefix 0) instead of being skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .. import grading
from ..sampling import SamplingParams
from .split import Step, prefix


@dataclass
class Task:
    """One wrong solution: `prompt` is the exact prompt it was sampled from."""
    prompt: str
    steps: list[Step]
    gold: str
    correct_samples: list[str]  # the question's correct samples: continuations of prefix 0 that were right
    samples: int  # how many samples of the question were graded (v_0 = correct / samples)
    question: str = ""  # the raw question (the judge locator shows it)
    # False when the solution has no final answer (cut off at the token limit, a loop): then it is not
    # known to fail as written, so the whole solution is rolled out too, as one more prefix
    complete: bool = True


@dataclass
class Result:
    error: int | None = None  # 1-based index of the first wrong step
    reason: str | None = None  # why no error was located
    rollouts: int = 0
    rates: dict[int, list[int]] = field(default_factory=dict)  # j -> [correct, drawn]
    successes: dict[int, list[str]] = field(default_factory=dict)  # j -> continuations that reached gold


class _Search:
    """The state of one solution's search: which prefix to roll out next and when it is done."""

    def __init__(self, task: Task, mode: str, m: int, margin: float | None, probe: bool = False):
        self.task, self.mode, self.m, self.margin = task, mode, m, margin
        self.res = Result(successes={0: list(task.correct_samples)})
        self.n = len(task.steps)
        # prefixes 0..end-1 are searched; v_end = 0 is known: the whole solution failed, or, for one cut
        # off, "beyond its end" (end = n + 1), where an error found means none of its steps is wrong
        self.end = self.n if task.complete else self.n + 1
        self.lo, self.hi = 0, self.end  # v_lo > 0 known, v_hi = 0 known
        self.j: int | None = None
        if task.correct_samples:
            self.res.rates[0] = [len(task.correct_samples), task.samples]
            self._start()
        elif probe:
            self.j = 0  # estimate v_0 by rollouts first
        else:
            self.res.reason = "question_never_solved"

    def _start(self) -> None:
        if self.end == 1:
            self.res.error = 1
        else:
            self.j = self._next()

    def _next(self) -> int | None:
        if self.mode == "binary":
            return (self.lo + self.hi) // 2 if self.hi - self.lo > 1 else None
        return self.lo + 1 if self.lo + 1 < self.end else None

    def _found(self, e: int) -> None:
        if e > self.n:  # a cut-off solution whose every prefix, itself included, still reaches the answer
            self.res.reason = "cut_off_no_wrong_step"
        else:
            self.res.error = e

    def want(self, chunk: int) -> int:
        """Rollouts to draw for the current prefix now (0: its estimate is complete)."""
        got, drawn = self.res.rates.get(self.j, [0, 0])
        if drawn >= self.m or (got and self.margin is None):
            return 0
        return min(chunk, self.m - drawn)

    def record(self, oks: list[bool], texts: list[str]) -> None:
        rate = self.res.rates.setdefault(self.j, [0, 0])
        rate[0] += sum(oks)
        rate[1] += len(oks)
        self.res.rollouts += len(oks)
        self.res.successes.setdefault(self.j, []).extend(t for ok, t in zip(oks, texts) if ok)

    def settle(self) -> None:
        """Called when the current prefix's estimate is complete: move the bounds."""
        got, drawn = self.res.rates[self.j]
        if self.j == 0:  # the probe of an unsolved question
            self.j = None
            if got:
                self._start()
            else:
                self.res.reason = "question_never_solved"
            return
        if self.margin is not None:
            prev = self.res.rates[self.j - 1]
            dropped = prev[0] / prev[1] - got / drawn > self.margin
        else:
            dropped = False
        if got == 0 or dropped:
            self.hi = self.j
            if self.mode == "linear":  # the first failing prefix in order is the answer
                self.j = None
                self._found(self.hi)
                return
        else:
            self.lo = self.j
        self.j = self._next()
        if self.j is None:
            self._found(self.hi)


class RolloutLocator:
    def __init__(self, backend, params: SamplingParams, rollouts: int = 8, chunk: int | None = None,
                 search: str = "binary", margin: float | None = None, probe_unsolved: bool = False,
                 grade: Callable[..., dict] = grading.grade):
        if search not in ("binary", "linear"):
            raise ValueError(f"search must be binary or linear, got {search}")
        if margin is not None and search == "binary":
            raise ValueError("margin compares neighbouring prefixes: use search='linear'")
        if rollouts < 1:
            raise ValueError("rollouts must be >= 1")
        self.backend, self.params, self.m = backend, params, rollouts
        self.chunk = max(1, min(chunk or rollouts, rollouts))
        self.search, self.margin, self.grade, self.probe = search, margin, grade, probe_unsolved
        self.calls = 0

    def locate(self, tasks: list[Task], progress: Callable[[int], None] | None = None) -> list[Result]:
        searches = [_Search(t, self.search, self.m, self.margin, self.probe) for t in tasks]
        if progress:
            progress(sum(s.j is None for s in searches))
        rnd = 0
        while True:
            active = [s for s in searches if s.j is not None]
            if not active:
                break
            groups: dict[int, list[_Search]] = {}
            for s in active:
                groups.setdefault(s.want(self.chunk), []).append(s)
            for n, members in sorted(groups.items()):
                if n == 0:
                    continue
                heads = [prefix(s.task.steps, s.j) for s in members]
                params = SamplingParams(**{**self.params.as_dict(), "n": n, "seed": self.params.seed + rnd,
                                           "stop": tuple(self.params.stop)})
                outs = self.backend.generate([s.task.prompt + h for s, h in zip(members, heads)], params)
                self.calls += 1
                for s, head, comps in zip(members, heads, outs):
                    # graded with its finish: a rollout cut at the token limit has not reached the answer
                    ok = [bool(self.grade(head + c.text, s.task.gold, finish=c.finish)["correct"]) for c in comps]
                    s.record(ok, [c.text for c in comps])
            rnd += 1
            for s in active:
                if s.want(self.chunk) == 0:
                    s.settle()
                    if s.j is None and progress:
                        progress(1)
        return [s.res for s in searches]
