"""What a multi-process training launch needs before it starts: DeepSpeed for the ZeRO configs.

`mathpo loop launcher="accelerate launch --config_file configs/accelerate/zero3.yaml"` checks
its config here before the loop's first stage, and `mathpo train` checks the environment
`accelerate launch` sets, so a missing DeepSpeed is one line naming the extra, not a traceback
after hours of sampling.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml

from ..errors import UserError, require


def uses_deepspeed(launcher: str) -> str | None:
    """The reason `launcher` trains with DeepSpeed (its flag or its accelerate config), else None."""
    args = shlex.split(launcher)
    if "--use_deepspeed" in args or "--use-deepspeed" in args:
        return "--use_deepspeed"
    config = None
    for i, a in enumerate(args):
        if a in ("--config_file", "--config-file") and i + 1 < len(args):
            config = args[i + 1]
        elif a.startswith(("--config_file=", "--config-file=")):
            config = a.split("=", 1)[1]
    if config is None:
        return None
    try:
        settings = yaml.safe_load(Path(config).read_text())
    except OSError as e:
        raise UserError(f"launcher config {config}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"launcher config {config} is not valid YAML: {' '.join(str(e).split())}") from None
    if isinstance(settings, dict) and str(settings.get("distributed_type", "")).upper() == "DEEPSPEED":
        return config
    return None


def check_launcher(launcher: str | None) -> None:
    """UserError naming the `deepspeed` extra when the launcher needs DeepSpeed and it is missing."""
    why = uses_deepspeed(launcher) if launcher else None
    if why:
        require("deepspeed", "deepspeed", f"launcher {why} (DeepSpeed)", load=False)


def check_environment() -> None:
    """The same under `accelerate launch` (which says ACCELERATE_USE_DEEPSPEED=true)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        require("deepspeed", "deepspeed", "training with DeepSpeed (ACCELERATE_USE_DEEPSPEED)", load=False)
