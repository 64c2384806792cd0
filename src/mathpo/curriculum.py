"""The loop's curriculum (`curriculum.enabled` in a `mathpo loop` config): the current model's pass
rate on each training question (from the iteration's samples) orders pair/RFT rows easy to hard,
trained in that order, and optionally keeps only questions with `min_pass <= rate <= max_pass`."""

from __future__ import annotations

from .grading.metrics import pass_rates


def curriculum_order(cfg: dict, graded: list[dict], pooled: list[dict] = ()) -> dict | None:
    """{id: pass rate} of the questions to keep, or None when the curriculum is off. Rates come from
    this iteration's samples (`graded`); a question only an earlier iteration sampled (in `pooled`,
    the rows a pooled stage reads) keeps the rate it had then, so pooling still brings its rows."""
    c = cfg["curriculum"]
    if not c["enabled"]:
        return None
    rates = {**(pass_rates(list(pooled)) if pooled else {}), **pass_rates(graded)}
    return {k: v for k, v in rates.items() if c["min_pass"] <= v <= c["max_pass"]}


def apply_curriculum(rows: list[dict], order: dict | None) -> list[dict]:
    """Keep rows of kept questions, easiest (highest pass rate) first; stable within a question."""
    if order is None:
        return rows
    kept = [r for r in rows if str(r.get("id")) in order]
    return sorted(kept, key=lambda r: -order[str(r["id"])])


def curriculum_train(order: dict | None) -> dict:
    # train in the given (easy-to-hard) order instead of shuffling
    return {"train_sampling_strategy": "sequential"} if order is not None else {}
