"""`mathpo eval`: sample on a benchmark, grade, print an accuracy table, write summary.json."""

from __future__ import annotations

from pathlib import Path

from .. import models, prompts
from ..evaluation import evaluate, format_table
from ..sampling import get_backend
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
    records = common.load_records(cfg)
    params = common.sampling_params(cfg)
    prompts.get(cfg["template"])
    fewshot = common.fewshot_records(cfg)
    common.check_model(cfg)
    out = Path(cfg["out"] or f"runs/eval/{common.slug(cfg['dataset'])}-{cfg['split']}-{common.slug(cfg['model'])}")
    loaded = models.load(cfg["model"], cfg["dtype"], cfg["device"], cfg["cache_dir"])
    backend = get_backend(cfg["backend"], loaded, add_special_tokens=prompts.add_special_tokens(cfg["template"]),
                          batch_size=cfg["batch_size"])
    out.mkdir(parents=True, exist_ok=True)
    common.save_config(out, cfg)
    summary = evaluate(records, backend, loaded.tokenizer, params, out, cfg["model"], cfg["dataset"],
                       cfg["template"], ks=cfg["k"], workers=cfg["workers"], fewshot=fewshot)
    print(format_table(summary))
    print(f"wrote {out}/summary.json, {out}/graded.jsonl")
    return 0
