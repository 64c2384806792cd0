"""`mathpo sample`: n completions per question into one JSONL row each (resumable; data-parallel
under `torchrun` / `accelerate launch`, see `mathpo.sampling.shard`)."""

from __future__ import annotations

from .. import models, runlock
from ..sampling import shard
from ..sampling.sample_stage import sample_records
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "sample", "sample completions for each question (JSONL rows)", run)
    common.model_options(opts)
    common.dataset_options(opts)
    common.sampling_options(opts, n=4, temperature=0.7)
    opts.add("--out", default=None, help="run folder; rows go to OUT/samples.jsonl (default runs/sample/DATASET-MODEL)")


def run(args) -> int:
    cfg = args.options.resolve(args)
    records, params, fewshot = common.prepare_sampling(cfg)
    where = shard.launch()
    out = common.default_out(cfg, "sample")
    loaded = models.load(cfg["model"], cfg["dtype"], shard.device_for(cfg["device"], where), cfg["cache_dir"],
                         quiet=where.rank > 0)
    backend = common.make_backend(cfg, loaded)
    if where.rank == 0:  # one writer per run folder (the other ranks are this run's own)
        runlock.hold(out, "sample")
    out.mkdir(parents=True, exist_ok=True)
    if where.rank == 0:
        common.save_config(out, cfg)
    target = shard.shard_path(out, where) if where.distributed else out / "samples.jsonl"
    mine = shard.shard(records, where)
    stats = sample_records(mine, backend, loaded.tokenizer, params, target, cfg["model"], cfg["template"],
                           fewshot=fewshot)
    label = f"rank {where.rank}/{where.world}" if where.distributed else "questions"
    print(f"{label:<12}{'skipped':>8}{'rows':>8}{'tokens':>10}{'tok/s':>9}{'seconds':>9}")
    print(f"{len(mine):<12}{stats['questions_skipped']:>8}{stats['rows_written']:>8}{stats['tokens']:>10}"
          f"{stats['tokens_per_s'] or 0:>9}{stats['seconds']:>9}")
    if where.distributed:
        shard.barrier()  # every shard complete before rank 0 reads them
        if where.rank == 0:
            rows = shard.merge(out, where.world, records, out / "samples.jsonl")
            print(f"merged {where.world} shards: {rows} rows")
        shard.finish()
    if where.rank == 0:
        print(f"wrote {out}/samples.jsonl")
    return 0
