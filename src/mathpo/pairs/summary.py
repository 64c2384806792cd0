"""The summary every `mathpo pairs` run prints and saves beside its output (OUT.summary.json):
rows, pairs per question, questions skipped and why, and for step pairs where in the solutions
the errors were found and how many rollouts each located error cost, plus the time taken.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path


def _plain(value):
    """Counters -> dicts with sorted keys (ints sort numerically), recursively, for JSON."""
    if isinstance(value, Counter | dict):
        items = sorted(value.items(),
                       key=lambda kv: (not isinstance(kv[0], int), kv[0] if isinstance(kv[0], int) else str(kv[0])))
        return {str(k): _plain(v) for k, v in items}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def finish(stats: dict, t0: float) -> dict:
    stats["seconds"] = round(time.time() - t0, 2)
    return _plain(stats)


def sibling(output: str | Path, suffix: str) -> Path:
    """OUT.jsonl -> OUT{suffix} in the same folder."""
    output = Path(output)
    stem = output.name[:-len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + suffix)


def summary_path(output: str | Path) -> Path:
    """OUT.jsonl -> OUT.summary.json (same folder)."""
    return sibling(output, ".summary.json")


def format_summary(stats: dict) -> str:
    kind = stats.get("kind", "?")
    lines = [f"{kind} rows: {stats.get('rows', 0)} from {stats.get('questions', 0)} questions "
             f"in {stats.get('seconds', 0)} s"]
    per_q = stats.get("per_question") or {}
    if per_q:
        lines.append("rows per question: " + ", ".join(f"{k}: {v}" for k, v in per_q.items()))
    skipped = stats.get("skipped") or {}
    if skipped:
        lines.append("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    dups = [f"{k.replace('_', ' ')} {stats[k]}" for k in ("exact_duplicates", "near_duplicates", "rows_other_prompt",
                                                          "truncated_positives")
            if stats.get(k)]
    if dups:
        lines.append("dropped: " + ", ".join(dups))
    if kind == "rft":
        lines.append(f"cap per question: {stats.get('cap')} (p{stats.get('cap_percentile')}), "
                     f"dropped by cap: {stats.get('dropped_by_cap', 0)}")
    if kind == "step":
        loc = stats.get("locate", {})
        lines.append(f"wrong solutions: {stats.get('wrong_solutions', 0)}, errors located: {loc.get('located', 0)}, "
                     f"pairs: {stats.get('rows', 0)}")
        if loc.get("error_step"):
            lines.append("error at step: " + ", ".join(f"{k}: {v}" for k, v in loc["error_step"].items()))
        if loc.get("error_position"):
            lines.append("error position in solution: "
                         + ", ".join(f"{k} {v}" for k, v in loc["error_position"].items()))
        if loc.get("rollouts_per_located") is not None:
            lines.append(f"rollouts: {loc.get('rollouts', 0)} to locate ({loc['rollouts_per_located']} per located "
                         f"error), {stats.get('rectify', {}).get('rollouts', 0)} to rectify")
        refused = {k: v for k, v in (stats.get("rectify", {}).get("chosen_rejected") or {}).items() if v}
        if refused:
            why = ", ".join(f"{k} {v}" for k, v in (stats["rectify"].get("bad_arithmetic") or {}).items())
            lines.append("chosen steps rejected: " + ", ".join(f"{k} {v}" for k, v in refused.items())
                         + (f" ({why})" if why else ""))
    return "\n".join(lines)


def merge(parts: list[dict]) -> dict:
    """One summary from the summaries of parts of a run (counts added, settings from the first part)."""
    def add(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = add(out[k], v) if k in out else v
            return out
        if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
            return a + b
        return a if a is not None else b

    first = parts[0]
    out = first
    for p in parts[1:]:
        out = add(out, p)
    out["settings"] = first.get("settings")
    loc = out.get("locate")
    if loc:  # a ratio, so recomputed rather than added
        loc["rollouts_per_located"] = round(loc["rollouts"] / loc["located"], 2) if loc.get("located") else None
    return _plain(out)
