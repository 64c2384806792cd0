"""Rectification for Step-DPO (`mathpo pairs --kind step`): given a located wrong step, find
correct replacements for it written by the model itself.

From the prefix before the error (question + steps 1..e-1 + "Step e:" marker) the model's
continuations that reach the gold answer are candidates; the rollout locator already drew some
(reused, free), and `rectify_n` more are sampled only for errors that have none. chosen = the
first step of such a continuation, rejected = the wrong step; a chosen step equal to the
rejected one (after whitespace) or to an earlier chosen step is dropped, and so is one whose own
arithmetic is wrong (`pairs.arithmetic`: reaching the gold answer does not make the first step
right) or, with `min_support` > 1, one that fewer than `min_support` of the continuations begin with.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from .. import grading
from ..sampling import SamplingParams
from . import arithmetic
from .split import first_step


def candidates(rejected: str, continuations: list[str], mode: str, limit: int, min_support: int = 1,
               refused: Counter | None = None) -> list[tuple[str, str]]:
    """Up to `limit` (chosen step, full continuation) pairs, first come first kept. Each distinct
    step turned down is counted in `refused` by why: an `arithmetic.REASONS` name or `low_support`."""
    firsts = [(first_step(cont, mode), cont) for cont in continuations]
    support = Counter(arithmetic.normalize(step) for step, _ in firsts)
    refused = Counter() if refused is None else refused
    seen = {arithmetic.normalize(rejected)}
    out = []
    for step, cont in firsts:
        key = arithmetic.normalize(step)
        if not key or key in seen:
            continue
        seen.add(key)
        why = arithmetic.error(step)
        if why is None and support[key] < min_support:
            why = "low_support"
        if why is not None:
            refused[why] += 1
            continue
        out.append((step, cont))
        if len(out) >= limit:
            break
    return out


def sample_fixes(backend, params: SamplingParams, jobs: list[tuple[str, str, str]], n: int,
                 grade: Callable[..., dict] = grading.grade) -> tuple[list[list[str]], int]:
    """For each (prompt, answer_prefix, gold) job sample n continuations; return those reaching
    gold, per job, and the rollouts spent."""
    if not jobs or n < 1:
        return [[] for _ in jobs], 0
    p = SamplingParams(**{**params.as_dict(), "n": n, "seed": params.seed + 7919, "stop": tuple(params.stop)})
    outs = backend.generate([prompt + head for prompt, head, _ in jobs], p)
    fixes = [[c.text for c in comps if grade(head + c.text, gold, finish=c.finish)["correct"]]
             for (_, head, gold), comps in zip(jobs, outs)]
    return fixes, n * len(jobs)
