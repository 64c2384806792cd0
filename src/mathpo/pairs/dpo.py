"""Whole-solution preference pairs (DPO-ST) for `mathpo pairs --kind dpo` and the loop.

Per question: positives = the reference solution (when the data has one) plus the unique correct
samples, negatives = the unique wrong samples, near-duplicates (Jaccard similarity of token sets
above `threshold`) dropped within each side; of all positive x negative combinations the `k`
least similar are kept (ties: earlier positive, then earlier negative). Questions lacking a
positive or a negative are skipped and counted by reason. Pass rows of several sampling rounds
to pool them (DPO-ST pools the samples of earlier iterations).

Rows: `prompt` (the rendered prompt the samples were drawn from), `chosen`, `rejected` (TRL's
column names; completions only), `id`.
"""

from __future__ import annotations

import time

from .pool import build_pools, new_stats
from .similarity import jaccard, token_set
from .summary import finish


def pick_pairs(positives: list[str], negatives: list[str], k: int) -> list[tuple[str, str, float]]:
    """The k least similar (chosen, rejected) combinations with their similarity."""
    pos_sets = [token_set(p) for p in positives]
    neg_sets = [token_set(n) for n in negatives]
    combos = sorted(((jaccard(ps, ns), i, j) for i, ps in enumerate(pos_sets) for j, ns in enumerate(neg_sets)))
    return [(positives[i], negatives[j], sim) for sim, i, j in combos[:k]]


def build(graded_rows: list[dict], tokenizer, template: str, k: int = 3,
          threshold: float = 0.7) -> tuple[list[dict], dict]:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    t0 = time.time()
    stats = new_stats("dpo")
    stats.update(k=k, threshold=threshold, template=template)
    rows: list[dict] = []
    sims: list[float] = []
    for pool in build_pools(graded_rows, tokenizer, template, threshold, stats):
        stats["questions"] += 1
        if not pool.positives or not pool.negatives:
            reason = ("no_correct_or_wrong" if not pool.positives and not pool.negatives
                      else "no_correct" if not pool.positives else "no_wrong")
            stats["skipped"][reason] += 1
            stats["per_question"][0] += 1
            continue
        pairs = pick_pairs(pool.positives, pool.negatives, k)
        stats["per_question"][len(pairs)] += 1
        stats["reference_chosen"] = stats.get("reference_chosen", 0) + sum(
            pool.has_reference and c == pool.positives[0] for c, _, _ in pairs)
        for chosen, rejected, sim in pairs:
            rows.append({"prompt": pool.prompt, "chosen": chosen, "rejected": rejected, "id": pool.id})
            sims.append(sim)
    stats["rows"] = len(rows)
    stats["mean_pair_similarity"] = round(sum(sims) / len(sims), 4) if sims else None
    return rows, finish(stats, t0)
