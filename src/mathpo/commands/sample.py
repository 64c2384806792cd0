"""`mathpo sample`: n completions per question into one JSONL row each (resumable; data-parallel
under `torchrun` / `accelerate launch`, see `mathpo.sampling.shard`, or over a Ray cluster with
`--ray ADDRESS`, see `mathpo.sampling.distributed_ray`)."""

from __future__ import annotations

from .. import models, runlock
from ..errors import UserError
from ..sampling import loads_weights, shard
from ..sampling.sample_stage import sample_records
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "sample", "sample completions for each question (JSONL rows)", run)
    common.model_options(opts)
    common.dataset_options(opts)
    common.sampling_options(opts, n=4, temperature=0.7)
    opts.add("--ray", default=None, metavar="ADDRESS",
             help="sample on a Ray cluster: auto (one started on this node), HOST:PORT, or local")
    opts.add("--ray-workers", type=int, default=None, help="Ray workers (default: one per GPU, else per CPU)")
    opts.add("--ray-gpus", type=float, default=None, help="GPUs per Ray worker (default 1 on a GPU cluster)")
    opts.add("--out", default=None, help="run folder; rows go to OUT/samples.jsonl (default runs/sample/DATASET-MODEL)")


def load_backend(cfg: dict, where: shard.Launch | None = None):
    """(loaded model, backend) for this process; under --ray, each Ray worker runs it too."""
    where = where or shard.Launch()
    loaded = models.load(cfg["model"], cfg["dtype"], shard.device_for(cfg["device"], where), cfg["cache_dir"],
                         quiet=where.rank > 0, weights=loads_weights(cfg["backend"]))
    return loaded, common.make_backend(cfg, loaded)


def ray_settings(cfg: dict, where: shard.Launch):
    """--ray ADDRESS (or `ray:` in --config, an address or a section) with --ray-workers / --ray-gpus."""
    from dataclasses import asdict

    from ..sampling import distributed_ray

    s = distributed_ray.settings(cfg["ray"])
    if s is None:
        return None
    if where.distributed:
        raise UserError("--ray spreads the questions itself; run it as one process, not under torchrun")
    extra = {"workers": cfg["ray_workers"], "num_gpus": cfg["ray_gpus"]}
    return distributed_ray.settings({**asdict(s), **{k: v for k, v in extra.items() if v is not None}})


def run(args) -> int:
    cfg = args.options.resolve(args)
    records, params, fewshot = common.prepare_sampling(cfg)
    where = shard.launch()
    out = common.default_out(cfg, "sample")
    ray = ray_settings(cfg, where)
    if where.rank == 0:  # one writer per run folder (the other ranks are this run's own)
        runlock.hold(out, "sample")
    if ray is not None:
        from ..sampling import distributed_ray

        loaded, backend = distributed_ray.start(ray, load_backend, ({**cfg, "ray": None},), cfg["model"],
                                                cfg["backend"], cfg["cache_dir"])
    else:
        loaded, backend = load_backend(cfg, where)
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
