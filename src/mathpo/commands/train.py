"""`mathpo train`: SFT / DPO / Step-DPO through TRL, LoRA or full, one process or many.

    mathpo train --method dpo --model smollm2-135m-instruct --data pairs.jsonl --out runs/dpo [--lora] beta=0.2
    accelerate launch --num_processes 2 --cpu -m mathpo.cli train --method sft --data gsm8k:train ...

Trailing `key=value` settings that are not mathpo options go to TRL's DPOConfig / SFTConfig
(`beta=0.4 loss_type=sigmoid learning_rate=5e-7 max_steps=100 gradient_accumulation_steps=8 ...`);
in a YAML file (`--config`) they sit under `trl:`, LoRA settings under `peft:`.
"""

from __future__ import annotations

import os

from .. import prompts, runlock
from ..errors import UserError
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "train", "train a model with SFT, DPO or Step-DPO through TRL", run)
    parser.epilog = ("key=value settings that are not options above are fields of TRL's DPOConfig / SFTConfig "
                     "(beta=0.2 loss_type=sigmoid learning_rate=5e-7 max_steps=100 gradient_accumulation_steps=8 "
                     "max_length=1024 seed=1 ...); peft.r=8 etc. set LoRA. Final model: OUT/model.")
    opts.add("--method", choices=["sft", "dpo"], default=None, help="sft or dpo (Step-DPO = dpo on step rows)")
    opts.add("--model", default="smollm2-135m-instruct", help="local HF folder, hub id, or smollm2-135m-instruct")
    opts.add("--data", default=None,
             help="JSONL/JSON/CSV/parquet rows (pairs or prompt/completion), or a dataset preset[:split] (gsm8k:train)")
    opts.add("--out", default=None, help="run folder (default runs/train/METHOD-MODEL); final model in OUT/model")
    opts.add("--lora", action="store_true", default=False, help="train a LoRA adapter (merged into OUT/model)")
    opts.add("--template", default=prompts.DEFAULT,
             help=f"prompt template for rows given as questions ({', '.join(prompts.TEMPLATES)})")
    opts.add("--resume", action="store_true", default=False, help="continue from the last checkpoint in OUT")
    opts.add("--merge-lora", default=True, type=_bool, help="with --lora: merge the adapter into OUT/model")
    opts.add("--data-dir", default=None, help="folder with the preset files (else $MATHPO_DATA or ../shared/data)")
    opts.add("--cache-dir", default=None, help="where converted embedded models live (else $MATHPO_CACHE)")
    # Nested sections, reachable as trl.KEY=value / peft.KEY=value or in YAML; bare TRL keys land in trl.
    opts.defaults["trl"] = None
    opts.defaults["peft"] = None


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise UserError(f"expected true or false, got '{text}'")


def run(args) -> int:
    opts = args.options
    # key=value items that are not mathpo options are TRL config fields: route them into the trl section
    routed = []
    for item in args.overrides or []:
        key = item.partition("=")[0].strip().lstrip("-").replace("-", "_")
        top = key.split(".")[0]
        routed.append(item if top in opts.defaults or "=" not in item else f"trl.{item.strip().lstrip('-')}")
    args.overrides = routed
    cfg = opts.resolve(args)
    if cfg["method"] is None:
        raise UserError("--method is required (sft or dpo)")
    if cfg["data"] is None:
        raise UserError("--data is required")
    for section in ("trl", "peft"):
        if cfg[section] is not None and not isinstance(cfg[section], dict):
            raise UserError(f"'{section}' must be a mapping of settings")
    common.check_model(cfg)
    from ..training.launcher import check_environment

    check_environment()
    out = cfg["out"] or f"runs/train/{cfg['method']}-{common.slug(cfg['model'])}"
    if os.environ.get("RANK", "0") == "0":  # one writer per run folder (other ranks are this run's own)
        runlock.hold(out, "train")
    from ..training import train

    try:
        train(cfg["method"], cfg["model"], cfg["data"], out, lora=bool(cfg["lora"]), template=cfg["template"],
              trl=cfg["trl"], peft=cfg["peft"], merge_lora=cfg["merge_lora"], data_dir=cfg["data_dir"],
              resume=bool(cfg["resume"]), cache_dir=cfg["cache_dir"])
    finally:
        runlock.release(out)
    return 0
