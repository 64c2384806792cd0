"""TCMalloc for the commands that sample or train (`sample`, `pairs`, `train`, `eval`, `loop`), where
the system has it.

Why: glibc's malloc keeps what a training step frees in fragmented heaps. On SmolLM2-135M full DPO
(bench/training.py) mathpo's process held 1.3 GB more than its live tensors before the first step,
and peaked at 3.9 GB with 2.8 GB live. Under TCMalloc the same run peaks at 3.0 GB and runs faster
per step; the hf backend samples ~13% faster (bench/sampling.py) and `make demo` took 10.8 min
instead of 14.9. Returning memory from glibc instead (a low mmap threshold) halved the speed, as every
large tensor then comes in fresh, zeroed pages. PyTorch's CPU performance guide and vLLM's CPU
docs recommend TCMalloc for the same reason.

A preload can only take effect at process start, so the command line re-executes itself once with
LD_PRELOAD set (same PID, arguments and environment otherwise) before anything heavy is imported.
MATHPO_MALLOC: `auto` (the default: TCMalloc if found, else the system's), `system` (never), or a
library path. Linux only; elsewhere nothing changes. Used by `mathpo.cli.entry` and bench/training.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMMANDS = ("sample", "pairs", "train", "eval", "loop")  # measured faster under it; `serve` was not measured
NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")  # Debian/Ubuntu: libtcmalloc-minimal4
DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
DONE = "MATHPO_MALLOC_SET"  # set on re-exec, so a command re-executes at most once


def library(setting: str | None = None) -> str | None:
    """The TCMalloc library to preload, or None (not Linux, turned off, or not installed)."""
    setting = (os.environ.get("MATHPO_MALLOC", "auto") if setting is None else setting).strip() or "auto"
    if not sys.platform.startswith("linux") or setting == "system":
        return None
    if setting != "auto":
        return setting if Path(setting).is_file() else None
    return next((str(Path(d) / n) for n in NAMES for d in DIRS if (Path(d) / n).is_file()), None)


def preload_env(env: dict[str, str] | None = None) -> dict[str, str] | None:
    """`env` (default: this process's) with TCMalloc preloaded, or None where there is nothing to add."""
    env = dict(os.environ if env is None else env)
    lib = library(env.get("MATHPO_MALLOC"))
    preloaded = env.get("LD_PRELOAD", "").replace(":", " ").split()
    if lib is None or any("malloc" in Path(p).name for p in preloaded):  # an allocator already chosen
        return None
    env["LD_PRELOAD"] = " ".join([lib, *preloaded])
    # gperftools prints a line per allocation over 1 GB (a large KV cache or logits): not an error
    env.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 40))
    return env


def reexec(argv: list[str]) -> None:
    """Re-execute `python -m mathpo.cli argv` under TCMalloc; return where there is nothing to do."""
    if os.environ.get(DONE):
        return
    env = preload_env()
    if env is None:
        return
    env[DONE] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "mathpo.cli", *argv], env)
    except OSError:  # could not re-execute: run on as we are
        return


def active() -> str:
    """The allocator this process runs on: the malloc library mapped into it (TCMalloc, or another one
    MATHPO_MALLOC named: jemalloc, mimalloc), else `system`."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return next((line.split()[-1] for line in maps.splitlines() if "malloc" in line.rsplit("/", 1)[-1]),
                "system")
