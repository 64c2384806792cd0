"""`mathpo eval`: sample on a benchmark, grade, print an accuracy table, write summary.json."""

from __future__ import annotations

from .. import models
from ..evaluation import evaluate, format_table
from ..sampling import loads_weights
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "eval", "evaluate a model on a benchmark (accuracy, pass@k, maj@k)", run)
    common.model_options(opts)
    common.dataset_options(opts)
    common.sampling_options(opts)
    opts.add("--k", type=int, action="append", default=[], help="report pass@k and maj@k for this k (repeatable)")
    opts.add("--workers", type=int, default=1, help="grading processes")
    opts.add("--out", default=None, help="run folder (default runs/eval/DATASET-SPLIT-MODEL)")


def run(args) -> int:
    cfg = args.options.resolve(args)
    records, params, fewshot = common.prepare_sampling(cfg)
    out = common.default_out(cfg, "eval")
    loaded = models.load(cfg["model"], cfg["dtype"], cfg["device"], cfg["cache_dir"],
                         weights=loads_weights(cfg["backend"]))
    backend = common.make_backend(cfg, loaded)
    out.mkdir(parents=True, exist_ok=True)
    common.save_config(out, cfg)
    summary = evaluate(records, backend, loaded.tokenizer, params, out, cfg["model"], cfg["dataset"],
                       cfg["template"], ks=cfg["k"], workers=cfg["workers"], fewshot=fewshot)
    print(format_table(summary))
    print(f"wrote {out}/summary.json, {out}/graded.jsonl")
    return 0
