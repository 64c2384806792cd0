"""Rejection-sampling fine-tuning sets (DPO-ST's RFT) for `mathpo pairs --kind rft` and the loop.

Per question: the reference solution (when present) plus the unique correct samples,
near-duplicates dropped (Jaccard similarity of token sets above `threshold`); each question is
then capped at the `cap_percentile`-th percentile of solutions per question (computed over the
questions that have at least one, linear interpolation as numpy's default, rounded down, at
least 1), keeping the reference and then the earliest samples. Questions without a correct
solution are skipped and counted.

Rows: `prompt` (the rendered prompt), `completion`, `id`.
"""

from __future__ import annotations

import math
import time

from .pool import build_pools, new_stats
from .summary import finish


def percentile(values: list[int], q: float) -> float:
    """numpy.percentile's default (linear) without numpy."""
    if not values:
        raise ValueError("percentile of nothing")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def build(graded_rows: list[dict], tokenizer, template: str, threshold: float = 0.7,
          cap_percentile: float = 90) -> tuple[list[dict], dict]:
    if not 0 < cap_percentile <= 100:
        raise ValueError(f"cap_percentile must be in (0, 100], got {cap_percentile}")
    t0 = time.time()
    stats = new_stats("rft")
    stats.update(threshold=threshold, cap_percentile=cap_percentile, template=template)
    pools = build_pools(graded_rows, tokenizer, template, threshold, stats)
    stats["questions"] = len(pools)
    counts = [len(p.positives) for p in pools if p.positives]
    cap = max(1, int(percentile(counts, cap_percentile))) if counts else 0
    stats["cap"] = cap
    rows: list[dict] = []
    capped = 0
    for pool in pools:
        if not pool.positives:
            stats["skipped"]["no_correct"] += 1
            stats["per_question"][0] += 1
            continue
        keep = pool.positives[:cap]
        capped += len(pool.positives) - len(keep)
        stats["per_question"][len(keep)] += 1
        rows += [{"prompt": pool.prompt, "completion": c, "id": pool.id} for c in keep]
    stats["rows"] = len(rows)
    stats["dropped_by_cap"] = capped
    return rows, finish(stats, t0)
