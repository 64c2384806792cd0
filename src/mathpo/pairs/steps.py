"""Step-DPO pairs from graded samples, with the first wrong step found by the model itself
(`mathpo pairs --kind step --model M`; also called by the self-training loop).

Pipeline per wrong solution: split into steps (`pairs.split`) -> locate the first wrong step
(`pairs.locate`, Monte Carlo rollouts; or `pairs.judge`, an OpenAI-compatible chat model) ->
rectify (`pairs.rectify`: a correct next step sampled from the prefix before the error, its own
arithmetic checked by `pairs.arithmetic`) -> row.

Rows follow Math-Step-DPO-10K's schema plus `id`:
- `prompt`: the raw question (not rendered);
- `initial_reason_steps`: the answer text before the wrong step, starting with the template's
  `prompt_end` (for `chat-step`: "Let's think step by step.\\nStep 1: ...\\nStep 2:") and ending
  with the wrong step's "Step k:" marker when it has one;
- `chosen` / `rejected`: one step each (the correct replacement / the wrong step), no EOS;
- `full_chosen` / `full_rejected`: that step and everything the answer says after it;
- `answer`: the gold answer; `dataset`: the rows' `dataset` field or the `dataset` option.
The exact prompt a trainer must feed is `pairs.formats.step_prompt(tokenizer, row, template)`:
`prompts.render(tokenizer, prompt, template)` with its `prompt_end` replaced by
`initial_reason_steps` -- the text the rollouts continued, token for token.
"""

from __future__ import annotations

import inspect
import json
import time
from collections import Counter
from pathlib import Path

from .. import prompts
from ..errors import UserError
from ..records import JsonlAppender
from ..sampling import SamplingParams
from . import arithmetic, rectify
from .locate import RolloutLocator, Task
from .pool import group
from .split import prefix, split, used_mode
from .summary import finish, merge, sibling


def _position(e: int, n: int) -> str:
    if e == 1:
        return "first"
    if e == n:
        return "last"
    return ("early", "middle", "late")[min(2, int(3 * (e - 1) / n))]


def collect(graded_rows: list[dict], tokenizer, template: str, split_mode: str,
            max_per_question: int | None, stats: dict) -> list[tuple[dict, Task]]:
    """(wrong row, Task) for each unique wrong solution, with the question's correct samples."""
    out = []
    for qrows in group(graded_rows).values():
        stats["questions"] += 1
        rendered = None
        seen: set[str] = set()
        taken = 0
        for r in qrows:
            if r["correct"] or r["completion"].strip() in seen:
                continue
            seen.add(r["completion"].strip())
            if max_per_question is not None and taken >= max_per_question:
                stats["skipped"]["over_max_per_question"] += 1
                continue
            if not r.get("prompt") and rendered is None:
                rendered = prompts.render(tokenizer, r["question"], template)
            prompt = r.get("prompt") or rendered
            same = [x for x in qrows if (x.get("prompt") or rendered) == prompt]
            steps = split(r["completion"], split_mode)
            if not steps:
                stats["skipped"]["empty_solution"] += 1
                continue
            taken += 1
            stats["wrong_solutions"] += 1
            stats["steps_per_solution"][len(steps)] += 1
            # a solution cut off (no final answer) may have every step right: rolled out to its end too
            out.append((r, Task(prompt, steps, str(r["gold"]), [x["completion"] for x in same if x["correct"]],
                                len(same), r["question"], complete=not r.get("truncated"))))
    return out


def build(graded_rows: list[dict], backend, tokenizer, template: str, *, locator: str = "rollout",
          judge=None, rollouts: int = 8, chunk: int | None = 4, search: str = "binary",
          margin: float | None = None, rectify_n: int = 8, pairs_per_error: int = 1,
          split_mode: str = "auto", temperature: float = 0.7, top_p: float = 0.95,
          max_new_tokens: int = 256, seed: int = 0, max_per_question: int | None = None,
          probe_unsolved: bool = False, calculator: bool = False, min_chosen_support: int = 1,
          dataset: str | None = None, progress=None) -> tuple[list[dict], dict]:
    """Step pairs from graded rows. `backend` samples rollouts and fixes; `judge` (a
    `pairs.judge.JudgeLocator`) replaces rollouts for localization when locator='judge'."""
    t0 = time.time()
    t = prompts.get(template)
    stats: dict = {"kind": "step", "template": template, "locator": locator, "questions": 0, "rows": 0,
                   "wrong_solutions": 0, "skipped": Counter(), "per_question": Counter(),
                   "steps_per_solution": Counter(),
                   "settings": {"rollouts": rollouts, "chunk": chunk, "search": search, "margin": margin,
                                "rectify_n": rectify_n, "pairs_per_error": pairs_per_error,
                                "probe_unsolved": probe_unsolved,
                                "split": split_mode, "temperature": temperature, "top_p": top_p,
                                "max_new_tokens": max_new_tokens, "seed": seed, "calculator": calculator,
                                "min_chosen_support": min_chosen_support}}
    items = collect(graded_rows, tokenizer, template, split_mode, max_per_question, stats)
    params = SamplingParams(n=1, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            stop=t.stop, seed=seed, calculator=calculator)
    tasks = [task for _, task in items]
    if locator == "rollout":
        loc = RolloutLocator(backend, params, rollouts=rollouts, chunk=chunk, search=search, margin=margin,
                             probe_unsolved=probe_unsolved)
    elif locator == "judge":
        if judge is None:
            raise ValueError("locator='judge' needs a judge")
        loc = judge
    else:
        raise ValueError(f"unknown locator '{locator}' (rollout, judge)")
    t_loc = time.time()
    results = loc.locate(tasks, progress=progress)
    located = [(row, task, res) for (row, task), res in zip(items, results) if res.error is not None]
    for res in results:
        if res.error is None:
            stats["skipped"][res.reason or "not_located"] += 1
    spent = sum(r.rollouts for r in results)
    stats["locate"] = {
        "located": len(located), "rollouts": spent, "seconds": round(time.time() - t_loc, 2),
        "rollouts_per_located": round(spent / len(located), 2) if located else None,
        "error_step": Counter(res.error for _, _, res in located),
        "error_position": Counter(_position(res.error, len(task.steps)) for _, task, res in located),
        **({"judge_calls": loc.calls} if locator == "judge" else {"generate_calls": loc.calls}),
    }

    # rectify: reuse the locator's successful rollouts from the prefix before the error; where they
    # give no acceptable step, sample more and choose among the old and new ones together
    def choose(task, res, conts, refused):
        return rectify.candidates(task.steps[res.error - 1].body, conts, used_mode(task.steps), pairs_per_error,
                                  min_chosen_support, refused)

    refused = [Counter() for _ in located]  # per error, from its last choice only (no double counting)
    fixes = [choose(task, res, res.successes.get(res.error - 1, []), refused[i])
             for i, (_row, task, res) in enumerate(located)]
    need = [i for i, f in enumerate(fixes) if not f]
    jobs = [(located[i][1].prompt, prefix(located[i][1].steps, located[i][2].error - 1), located[i][1].gold)
            for i in need]
    sampled, cost = rectify.sample_fixes(backend, params, jobs, rectify_n) if rectify_n > 0 else ([], 0)
    for i, conts in zip(need, sampled):
        _, task, res = located[i]
        refused[i] = Counter()
        fixes[i] = choose(task, res, res.successes.get(res.error - 1, []) + conts, refused[i])
    why = sum(refused, Counter())
    bad = Counter({k: v for k, v in why.items() if k in arithmetic.REASONS})
    stats["rectify"] = {"rollouts": cost, "sampled_for": len(need), "reused": len(located) - len(need),
                        "no_fix_found": sum(not f for f in fixes),
                        "chosen_rejected": Counter(chosen_bad_arithmetic=sum(bad.values()),
                                                   chosen_low_support=why["low_support"]),
                        "bad_arithmetic": bad}
    if stats["rectify"]["no_fix_found"]:
        stats["skipped"]["no_fix_found"] += stats["rectify"]["no_fix_found"]

    rows = []
    per_q: Counter = Counter()
    for (row, task, res), found in zip(located, fixes):
        e, steps = res.error, task.steps
        for chosen, cont in found:
            rows.append({"prompt": row["question"], "initial_reason_steps": t.prompt_end + prefix(steps, e - 1),
                         "chosen": chosen, "rejected": steps[e - 1].body, "full_chosen": cont,
                         "full_rejected": steps[e - 1].body + "".join(s.text for s in steps[e:]),
                         "answer": str(row["gold"]), "dataset": dataset or row.get("dataset") or "unknown",
                         "id": str(row["id"])})
            per_q[str(row["id"])] += 1
    stats["per_question"] = Counter(per_q.get(qid, 0) for qid in group(graded_rows))
    stats["rows"] = len(rows)
    stats["rollouts_total"] = spent + cost
    return rows, finish(stats, t0)


def parts_path(output: str | Path) -> Path:
    """OUT.jsonl -> OUT.parts.jsonl: finished groups of a `step` run, kept until OUT is written."""
    return sibling(output, ".parts.jsonl")


def _built_with(*args, **kwargs) -> dict:
    """What a part's rows depend on besides its questions, as JSON values: `build`'s options (defaults
    filled in, so passing one explicitly or not makes no difference), the model that samples (the
    folder its tokenizer was loaded from) and the judge's endpoint and model."""
    bound = inspect.signature(build).bind(None, *args, **kwargs)
    bound.apply_defaults()
    options = dict(bound.arguments)
    backend, tokenizer, judge = options.pop("backend"), options.pop("tokenizer"), options.pop("judge")
    for unused in ("graded_rows", "progress"):
        options.pop(unused)
    model = getattr(tokenizer, "name_or_path", None) or getattr(backend, "path", None)
    options["model"] = str(model) if model else None
    options["judge"] = [getattr(judge, "url", None), getattr(judge, "model", None)] if judge is not None else None
    return json.loads(json.dumps(options, default=str))


def _check_built_with(parts_path, part: dict, built_with: dict) -> None:
    """Refuse to mix parts built otherwise (a re-run with other options would silently keep them)."""
    old = part.get("built_with")
    if old is None:
        return  # a parts file from before options were recorded: nothing to compare
    for k in sorted(set(old) | set(built_with)):
        if old.get(k) != built_with.get(k):
            raise UserError(f"{parts_path} holds finished parts built with other settings ({k} {old.get(k)!r} "
                            f"there, {built_with.get(k)!r} now); re-run with those or delete it to start afresh")


def build_in_parts(graded_rows: list[dict], parts_path: str | Path, *args, questions_per_part: int = 32,
                   progress=None, **kwargs) -> tuple[list[dict], dict]:
    """`build` over groups of questions, each group's rows and summary appended to `parts_path` as it
    finishes, so a killed run resumes at the first unfinished group. The grouping does not change the
    random streams: each rollout's is keyed by (seed, prompt, sample), not by the batch it ran in.
    Each part records what it was built with (`_built_with`); a re-run with other options or another
    model is refused rather than mixing parts. The caller writes the final output and then removes
    `parts_path`."""
    t0 = time.time()
    log = JsonlAppender(parts_path)
    done = {p["part"]: p for p in log.rows()}
    ids = list(group(graded_rows))
    parts = [ids[i:i + questions_per_part] for i in range(0, len(ids), questions_per_part)]
    built_with = _built_with(*args, **kwargs)
    for i, part_ids in enumerate(parts):  # before any work, so a refused run costs nothing
        if i in done and done[i]["ids"] == part_ids:
            _check_built_with(parts_path, done[i], built_with)
    finished, resumed = [], 0
    for i, part_ids in enumerate(parts):
        if i in done and done[i]["ids"] == part_ids:
            finished.append(done[i])
            resumed += 1
            if progress:
                progress(done[i]["stats"].get("wrong_solutions", 0))
            continue
        keep = set(part_ids)
        rows, stats = build([r for r in graded_rows if str(r["id"]) in keep], *args, progress=progress, **kwargs)
        record = {"part": i, "ids": part_ids, "built_with": built_with, "rows": rows, "stats": stats}
        log.append([record])
        finished.append(record)
    rows = [r for p in finished for r in p["rows"]]
    stats = merge([p["stats"] for p in finished]) if finished else {"kind": "step", "rows": 0, "questions": 0}
    stats["parts"] = {"count": len(parts), "resumed": resumed}
    stats["seconds_this_run"] = round(time.time() - t0, 2)
    return rows, stats
