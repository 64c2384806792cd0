"""The eval stage: sample on a benchmark, grade, and report accuracy (pass@k, maj@k when n > 1).

`mathpo eval --model M --dataset D [--split S] [--limit N] [--out DIR]` writes into DIR:
`samples.jsonl` (resumable), `graded.jsonl` (per item), `summary.json`, `config.yaml`.
"""

from __future__ import annotations

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
    write_jsonl(out_dir / "graded.jsonl", graded)
    ks = sorted({k for k in ks if k <= params.n} | ({params.n} if params.n > 1 else set()))
    summary = {**summarize(graded, ks), "model": model_name, "dataset": dataset, "template": template,
               "sampling": params.as_dict(), "backend": backend.name, **(extra or {}),
               "generation": {k: stats[k] for k in ("tokens", "seconds", "tokens_per_s", "questions_skipped")}}
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
