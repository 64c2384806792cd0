"""DPO-ST's mechanism, measured: are the DPO model's pseudo-labels better than the model's before it?

DPO-ST claims the DPO model yields more correct and more diverse solutions to SFT on than the SFT
model it started from (REFERENCE.md section 1). A `dpo-st` iteration samples both on the same
questions: ITER/sample (the current model, `sample.n` per question) and ITER/sample_dpo (its DPO
model, `rft.n`). This section of `RUN/report.md` (written by `mathpo loop`, rebuilt by
`python -m mathpo.report RUN`) compares them at equal n (the first m samples of each question,
m = the smaller count): per-sample accuracy, pass@m, and distinct correct solutions per question
(whitespace-normalized text), each as a paired difference over the same questions with a 95%
interval (pass@m also with its exact McNemar p).
"""

from __future__ import annotations

from pathlib import Path

from .grading.metrics import group
from .pairs.arithmetic import normalize
from .records import read_jsonl


def _per_question(rows: list[dict], m: int) -> dict[str, tuple[float, float, float]]:
    """id -> (share correct, any correct, distinct correct texts) over its first m samples."""
    out = {}
    for qid, qrows in group(rows).items():
        first = sorted(qrows, key=lambda r: r.get("sample", 0))[:m]
        right = [r for r in first if r.get("correct")]
        distinct = {normalize(r["completion"]) for r in right}
        out[qid] = (len(right) / len(first), float(bool(right)), float(len(distinct)))
    return out


def compare(before: list[dict], after: list[dict]) -> dict | None:
    """The three measures of `after` (DPO model) against `before` on their shared questions."""
    from .report import paired

    n_before = min((len(v) for v in group(before).values()), default=0)
    n_after = min((len(v) for v in group(after).values()), default=0)
    m = min(n_before, n_after)
    if not m:
        return None
    b, a = _per_question(before, m), _per_question(after, m)
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    out = {"questions": len(shared), "m": m}
    for j, name in enumerate(("accuracy", "pass@m", "distinct_correct")):
        ref, new = {q: b[q][j] for q in shared}, {q: a[q][j] for q in shared}
        out[name] = {"before": sum(ref.values()) / len(shared), "after": sum(new.values()) / len(shared),
                     **paired(ref, new)}
    return out


def labels_table(root: str | Path, order: list[str]) -> str:
    """Markdown for every iteration folder (in stage order) that holds both sampling stages."""
    from .report import change

    root = Path(root)
    lines = []
    for folder in dict.fromkeys(rel.rsplit("/", 1)[0] for rel in order):
        paths = [root / folder / stage / "graded.jsonl" for stage in ("sample", "sample_dpo")]
        c = compare(read_jsonl(paths[0]), read_jsonl(paths[1])) if all(p.is_file() for p in paths) else None
        if c is None:
            continue
        acc, pas, dist = c["accuracy"], c["pass@m"], c["distinct_correct"]
        lines.append(f"| {folder} | {c['questions']} | {c['m']} "
                     f"| {100 * acc['before']:.1f}% -> {100 * acc['after']:.1f}% ({change(acc)}) "
                     f"| {100 * pas['before']:.1f}% -> {100 * pas['after']:.1f}% "
                     f"({change(pas)}, p {pas['mcnemar_p']:.3g}) "
                     f"| {dist['before']:.2f} -> {dist['after']:.2f} ({change(dist, scale=1, digits=2)}) |")
    if not lines:
        return ""
    return ("Pseudo-labels (DPO-ST's mechanism): the DPO model's samples against the samples of the model\n"
            "it was trained from, same questions, first m samples of each; paired change [95% interval].\n\n"
            "| iteration | questions | m | accuracy per sample | pass@m | distinct correct per question |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines))
