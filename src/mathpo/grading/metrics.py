"""Metrics over graded rows grouped by question `id`: accuracy, unbiased pass@k, maj@k, and the
group-by and majority vote behind them.

Used by `mathpo eval`, `mathpo pairs` (pools), `mathpo loop` (curriculum, report) and the web demo's vote.
"""

from __future__ import annotations

from collections.abc import Callable
from math import comb, sqrt

from .equivalence import equivalent
from .normalize import normalize


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021): 1 - C(n-c, k) / C(n, k), the chance that k of n samples hold a correct one."""
    if k > n:
        raise ValueError(f"k={k} > n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def group(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by question id (as text), questions in first-seen order, each question's rows in input
    order (stages write a question's samples in `sample` order; files of several rounds keep their
    rounds apart). The one group-by: metrics, the pairs pools, the loop's curriculum, the report."""
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(str(r["id"]), []).append(r)
    return by_id


def pass_rates(rows: list[dict]) -> dict[str, float]:
    """{question id: share of its rows graded correct}."""
    return {k: sum(bool(r["correct"]) for r in v) / len(v) for k, v in group(rows).items()}


def answer_classes(samples: list[dict], same: Callable[[str, str], bool] = equivalent) -> list[list[dict]]:
    """Samples with an answer, grouped so that equivalent answers (`1/2`, `0.5`, `\\frac12`) share a class.

    Samples without a stated final answer do not vote: no `pred`, or a cut-off one (`truncated` set,
    grading.truncation: the "12" may be the start of 125, the answer was never finished).
    Classes are in order of first appearance; same normalized strings join without a check, the rest
    are compared with each class's first answer by `same` (grading.equivalence by default; the web
    demo passes the fast tier only).
    """
    classes: list[list[dict]] = []
    by_norm: dict[str, int] = {}
    for r in samples:
        pred = r.get("pred")
        if pred is None or r.get("truncated"):
            continue
        key = normalize(str(pred))
        idx = by_norm.get(key)
        if idx is None:
            idx = next((i for i, c in enumerate(classes) if same(str(pred), str(c[0]["pred"]))), None)
        if idx is None:
            classes.append([])
            idx = len(classes) - 1
        by_norm[key] = idx
        classes[idx].append(r)
    return classes


def majority_class(samples: list[dict], same: Callable[[str, str], bool] = equivalent) -> list[dict]:
    """The largest class of equivalent answers (ties: the class seen first); [] when no sample has one."""
    return max(answer_classes(samples, same), key=len, default=[])  # max keeps the first of equal sizes


def majority(samples: list[dict]) -> dict | None:
    """First sample of the majority class; None when no sample has an answer."""
    best = majority_class(samples)
    return best[0] if best else None


def majority_score(samples: list[dict]) -> float:
    """maj@k of one question's samples, independent of their order.

    Cut-off rows and rows without an answer do not vote (`answer_classes`). A class is right when
    any of its rows is graded correct (its answers are equivalent; one may have lost its symbolic
    check to a timeout). When several classes tie for the most votes, the score is the share of
    them that are right (the expected verdict of a random tie-break), so 1/2 for a 1-1 tie between
    a right and a wrong answer. 0.0 when no sample has an answer.
    """
    classes = answer_classes(samples)
    if not classes:
        return 0.0
    top = max(len(c) for c in classes)
    tied = [c for c in classes if len(c) == top]
    return sum(any(bool(r["correct"]) for r in c) for c in tied) / len(tied)


def ci95(values: list[float]) -> list[float]:
    """95% interval for the mean of per-question scores: Wilson for 0/1 scores, else normal."""
    m = len(values)
    mean = sum(values) / m
    if all(v in (0, 1) for v in values):
        z = 1.96
        centre = (mean + z * z / (2 * m)) / (1 + z * z / m)
        half = z * sqrt(mean * (1 - mean) / m + z * z / (4 * m * m)) / (1 + z * z / m)
        return [max(0.0, centre - half), min(1.0, centre + half)]
    var = sum((v - mean) ** 2 for v in values) / max(1, m - 1)
    half = 1.96 * sqrt(var / m)
    return [max(0.0, mean - half), min(1.0, mean + half)]


def summarize(rows: list[dict], ks: list[int] = ()) -> dict:
    """Accuracy and counts over each question's first n samples (n: the fewest any question has);
    for each k <= n, pass@k (unbiased, over those n) and maj@k (`majority_score` of the first k)."""
    by_id = group(rows)
    n_q = len(by_id)
    if n_q == 0:
        return {"n": 0}
    n = min(len(s) for s in by_id.values())
    per_q = [sum(r["correct"] for r in s[:n]) / n for s in by_id.values()]
    out = {
        "n": n_q,
        "samples_per_question": n,
        "accuracy": sum(per_q) / n_q,  # mean over all samples: pass@1, greedy accuracy when n=1
        "accuracy_ci95": ci95(per_q),
        "strict_accuracy": sum(sum(r["strict_correct"] for r in s[:n]) / n for s in by_id.values()) / n_q,
        "no_answer": sum(r.get("pred") is None for s in by_id.values() for r in s[:n]) / (n * n_q),
        "timeouts": sum(bool(r.get("timeout")) for s in by_id.values() for r in s[:n]),
        "truncated": sum(bool(r.get("truncated")) for s in by_id.values() for r in s[:n]),  # cut-off answers
    }
    for k in ks:
        if k > n:
            continue
        out[f"pass@{k}"] = sum(pass_at_k(n, sum(r["correct"] for r in s[:n]), k) for s in by_id.values()) / n_q
        out[f"maj@{k}"] = sum(majority_score(s[:k]) for s in by_id.values()) / n_q
    return out
