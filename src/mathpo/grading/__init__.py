"""Grading: extract the final answer of a completion and compare it with the gold answer.

First version: numeric comparison only (the grading issue replaces it with the full grader).
Public API: `grade(completion, gold) -> dict(pred, correct, strict_correct)`.
Used by `mathpo grade`, `eval`, `pairs`, `loop`.
"""

from __future__ import annotations

import re
from fractions import Fraction

from .extract import after_hashes, last_boxed

_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _number(text: str) -> Fraction | None:
    m = _NUM.findall(text.replace("$", ""))
    if not m:
        return None
    try:
        return Fraction(m[-1].replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def extract(completion: str) -> tuple[str | None, bool]:
    """(answer, strict): strict when an explicit marker (boxed, ####) gave it."""
    for fn in (last_boxed, after_hashes):
        value = fn(completion)
        if value is not None:
            return value, True
    nums = _NUM.findall(completion)
    return (nums[-1] if nums else None), False


def equivalent(pred: str | None, gold: str) -> bool:
    if pred is None:
        return False
    if pred.strip() == gold.strip():
        return True
    a, b = _number(pred), _number(gold)
    return a is not None and a == b


def grade(completion: str, gold: str) -> dict:
    pred, strict = extract(completion)
    ok = equivalent(pred, gold)
    return {"pred": pred, "correct": ok, "strict_correct": ok and strict}


def grade_rows(rows: list[dict], workers: int = 1) -> list[dict]:
    """The same rows in the same order with `pred`, `correct`, `strict_correct` added."""
    return [{**r, **grade(r["completion"], str(r["gold"]))} for r in rows]
