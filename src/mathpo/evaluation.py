"""The eval stage: sample on a benchmark, grade, and report accuracy (pass@k, maj@k when n > 1).

`mathpo eval --model M --dataset D [--split S] [--limit N] [--out DIR]` writes into DIR:
`samples.jsonl` (resumable), `graded.jsonl` (per item), `summary.json`, `config.yaml`.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import grading
from .grading.metrics import summarize
from .records import read_jsonl, write_json, write_jsonl
from .sampling import Backend, SamplingParams
from .sampling.sample_stage import sample_records


def evaluate(records: list[dict], backend: Backend, tokenizer, params: SamplingParams, out_dir: str | Path,
             model_name: str, dataset: str, template: str, ks: list[int] = (), workers: int = 1,
             fewshot: list[dict] = (), extra: dict | None = None) -> dict:
    out_dir = Path(out_dir)
    stats = sample_records(records, backend, tokenizer, params, out_dir / "samples.jsonl", model_name, template,
                           fewshot=fewshot)
    ids = {r["id"] for r in records}
    rows = [r for r in read_jsonl(out_dir / "samples.jsonl") if r["id"] in ids]
    graded = grading.grade_rows(rows, workers=workers)
    generation = {k: stats[k] for k in ("tokens", "seconds", "tokens_per_s", "questions_skipped")}
    return _write_summary(graded, out_dir, params, ks, backend, generation,
                          {"model": model_name, "dataset": dataset, "template": template, **(extra or {})})


def evaluate_sets(sets: dict[str, list[dict]], backend: Backend, tokenizer, params: SamplingParams,
                  out_dir: str | Path, model_name: str, template: str, ks: list[int] = (),
                  workers: int = 1) -> tuple[dict[str, dict], dict]:
    """Every test set in one sampling call and one grading call (`mathpo loop`'s eval stages): the
    engine batches all questions together, so a small set never decodes alone at a small batch.
    OUT/samples.jsonl holds every row (ids `SET/ID`; resumable); OUT/SET/ gets `graded.jsonl` and
    `summary.json` as `evaluate` writes them (original ids). Returns ({set: summary}, seconds spent
    {"sample_s", "grading_s"})."""
    out_dir = Path(out_dir)
    original, tagged = {}, []
    for name, records in sets.items():
        for r in records:
            key = f"{name}/{r['id']}"
            original[key] = (name, r["id"])
            tagged.append({**r, "id": key})
    stats = sample_records(tagged, backend, tokenizer, params, out_dir / "samples.jsonl", model_name, template)
    t0 = time.perf_counter()
    graded = grading.grade_rows([r for r in read_jsonl(out_dir / "samples.jsonl") if r["id"] in original],
                                workers=workers)
    grading_s = round(time.perf_counter() - t0, 2)
    by_set: dict[str, list[dict]] = {name: [] for name in sets}
    for r in graded:
        name, rid = original[r["id"]]
        by_set[name].append({**r, "id": rid})
    summaries = {}
    for name, rows in by_set.items():
        generation = {"tokens": sum(r["tokens"] for r in rows), "seconds": stats["seconds"],
                      "tokens_per_s": stats["tokens_per_s"], "sampled_with": sorted(sets)}
        summaries[name] = _write_summary(rows, out_dir / name, params, ks, backend, generation,
                                         {"model": model_name, "dataset": name, "template": template})
    return summaries, {"sample_s": stats["seconds"], "grading_s": grading_s}


def _write_summary(graded: list[dict], out_dir: Path, params: SamplingParams, ks, backend, generation: dict,
                   about: dict) -> dict:
    """OUT/graded.jsonl and OUT/summary.json (accuracy, pass@k and maj@k for k <= n, settings)."""
    write_jsonl(out_dir / "graded.jsonl", graded)
    ks = sorted({k for k in ks if k <= params.n} | ({params.n} if params.n > 1 else set()))
    summary = {**summarize(graded, ks), **about, "sampling": params.as_dict(), "backend": backend.name,
               "generation": generation}
    write_json(out_dir / "summary.json", summary)
    return summary


def format_table(summary: dict) -> str:
    """A small fixed-width table of the headline figures."""
    keys = ["accuracy", "strict_accuracy"] + sorted(k for k in summary if k.startswith(("pass@", "maj@")))
    lo, hi = summary.get("accuracy_ci95", [float("nan")] * 2)
    lines = [f"{'dataset':<14}{'model':<28}{'n':>6}  " + "".join(f"{k:>16}" for k in keys),
             f"{Path(summary['dataset']).name[:13]:<14}{str(summary['model'])[-27:]:<28}{summary['n']:>6}  "
             + "".join(f"{100 * summary[k]:>15.1f}%" for k in keys),
             f"accuracy 95% interval: [{100 * lo:.1f}%, {100 * hi:.1f}%] over {summary['n']} questions"]
    return "\n".join(lines)
