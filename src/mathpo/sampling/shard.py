"""Data-parallel `mathpo sample`: under `torchrun` / `accelerate launch` each process samples a shard
of the questions into its own resumable file; when all are done, rank 0 merges them.

    torchrun --nproc_per_node 4 -m mathpo.cli sample --model M --dataset gsm8k --split train n=5 --out runs/s
    accelerate launch --num_processes 4 -m mathpo.cli sample ...

(Write `n=5`, not `--n 5`, after torchrun: its own parser takes `--n` for one of its options.)

Shard r of w holds questions r, r+w, r+2w, ... in `OUT/samples.rank{r}-of-{w}.jsonl`; the merged
`OUT/samples.jsonl` is in question order and written atomically. A killed launch re-run with the same
command resumes every shard. Processes meet at one barrier (gloo: no GPU collectives are needed).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from ..records import read_jsonl, write_jsonl


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launch() -> Launch:
    """This process's place in a torchrun/accelerate launch (one process: rank 0 of 1)."""
    env = os.environ
    return Launch(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def device_for(device: str, where: Launch) -> str:
    """One GPU per process: `auto`/`cuda` become cuda:LOCAL_RANK when launched on several."""
    import torch

    if where.distributed and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{where.local_rank % torch.cuda.device_count()}"
    return device


def shard(records: list[dict], where: Launch) -> list[dict]:
    return records[where.rank::where.world]


def shard_path(out_dir: Path, where: Launch) -> Path:
    return out_dir / f"samples.rank{where.rank}-of-{where.world}.jsonl"


def barrier() -> None:
    import torch.distributed as dist

    if not dist.is_initialized():
        # Long timeout: ranks may finish their shards hours apart on uneven hardware.
        dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
    dist.barrier()


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def merge(out_dir: Path, world: int, records: list[dict], target: Path) -> int:
    """Write every shard's rows into `target` in question order; return the row count."""
    rank = {r["id"]: i for i, r in enumerate(records)}
    rows = [row for r in range(world) for row in read_jsonl(shard_path(out_dir, Launch(r, world)))]
    rows.sort(key=lambda row: (rank.get(row["id"], len(rank)), row["sample"]))
    write_jsonl(target, rows)
    return len(rows)
