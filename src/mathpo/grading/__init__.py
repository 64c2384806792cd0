"""Grading: extract the final answer of a completion and decide whether it equals the gold answer.

Public API (used by `mathpo grade`, `eval`, `pairs`, `loop` and the web demo):
- `grade(completion, gold, finish=None) -> {pred, correct, strict_correct, timeout, truncated}`
- `grade_rows(rows, workers=1)`: the same rows, same order, with those fields added (each row's
  `finish` is used when it has one)
- `extract_answer(completion) -> (pred, strict)` (grading.extract)
- `equivalent(pred, gold) -> bool` (grading.equivalence)

`correct` is the flexible verdict (the last number counts when no marker is there); `strict_correct`
needs an explicit marker (`\\boxed{}`, `#### N`, "the answer is"). `timeout` is True when a symbolic
check overran its wall-clock limit (the answer then counts as wrong). `truncated` names why the final
answer is cut off (grading.truncation: `unbalanced`, `repetition`, `length`) or is null; a cut-off
answer is never correct, strict or flexible.
"""

from __future__ import annotations

from .equivalence import check, equivalent, fast, symbolic_forms
from .extract import extract_answer
from .symbolic import symbolic_many
from .truncation import cut_off

__all__ = ["grade", "grade_rows", "extract_answer", "equivalent", "check", "fast"]


def grade(completion: str, gold: str, timeout: float | None = None, finish: str | None = None) -> dict:
    pred, strict = extract_answer(completion or "")
    truncated = cut_off(completion or "", pred, finish)
    ok, timed_out = check(pred, str(gold), timeout) if truncated is None else (False, False)
    return {"pred": pred, "correct": ok, "strict_correct": ok and strict, "timeout": timed_out,
            "truncated": truncated}


def grade_rows(rows: list[dict], workers: int = 1, timeout: float | None = None, progress=None) -> list[dict]:
    """The same rows in the same order with `pred`, `correct`, `strict_correct`, `timeout` added.

    Extraction and the fast path run here; the pairs they leave undecided go, deduplicated, to
    `workers` sympy processes under a wall-clock limit (grading.symbolic).
    """
    out, pending = [], {}
    for i, r in enumerate(rows):
        completion = str(r.get("completion") or "")
        pred, strict = extract_answer(completion)
        gold = str(r["gold"])
        truncated = cut_off(completion, pred, r.get("finish"))
        verdict = fast(pred, gold) if pred is not None and truncated is None else False
        out.append({**r, "pred": pred, "correct": bool(verdict), "strict_correct": bool(verdict) and strict,
                    "timeout": False, "truncated": truncated})
        if verdict is None:
            pending.setdefault(symbolic_forms(pred, gold), []).append((i, strict))
        if progress is not None:
            progress.update(1)
    if pending:
        keys = list(pending)
        for key, (ok, timed_out) in zip(keys, symbolic_many(keys, workers=workers, timeout=timeout)):
            for i, strict in pending[key]:
                out[i].update(correct=ok, strict_correct=ok and strict, timeout=timed_out)
    return out
