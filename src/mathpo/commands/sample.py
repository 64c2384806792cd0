"""`mathpo sample`: n completions per question into one JSONL row each (resumable)."""

from __future__ import annotations

from pathlib import Path

from .. import models, prompts
from ..sampling import get_backend
from ..sampling.run import sample_records
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "sample", "sample completions for each question (JSONL rows)", run)
    common.model_options(opts)
    common.dataset_options(opts)
    common.sampling_options(opts, n=4, temperature=0.7)
    opts.add("--out", default=None, help="run folder; rows go to OUT/samples.jsonl (default runs/sample/DATASET-MODEL)")


def run(args) -> int:
    cfg = args.options.resolve(args)
    records = common.load_records(cfg)
    params = common.sampling_params(cfg)
    prompts.get(cfg["template"])
    fewshot = common.fewshot_records(cfg)
    common.check_model(cfg)
    out = Path(cfg["out"] or f"runs/sample/{common.slug(cfg['dataset'])}-{cfg['split']}-{common.slug(cfg['model'])}")
    loaded = models.load(cfg["model"], cfg["dtype"], cfg["device"], cfg["cache_dir"])
    backend = get_backend(cfg["backend"], loaded, add_special_tokens=prompts.add_special_tokens(cfg["template"]),
                          batch_size=cfg["batch_size"])
    out.mkdir(parents=True, exist_ok=True)
    common.save_config(out, cfg)
    stats = sample_records(records, backend, loaded.tokenizer, params, out / "samples.jsonl", cfg["model"],
                           cfg["template"], fewshot=fewshot)
    print(f"{'questions':<12}{'skipped':>8}{'rows':>8}{'tokens':>10}{'tok/s':>9}{'seconds':>9}")
    print(f"{len(records):<12}{stats['questions_skipped']:>8}{stats['rows_written']:>8}{stats['tokens']:>10}"
          f"{stats['tokens_per_s'] or 0:>9}{stats['seconds']:>9}")
    print(f"wrote {out}/samples.jsonl")
    return 0
