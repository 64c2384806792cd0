"""`mathpo loop CONFIG.yaml [key=value ...]`: run or resume a self-training loop (mathpo.loop).

    mathpo loop configs/demo.yaml                      # the embedded CPU demo
    mathpo loop configs/gsm8k.yaml iterations=2 dpo.overrides.beta=0.2

The YAML file is merged over DEFAULTS below (sections merge key by key); `key=value` overrides use
dotted keys. Unknown keys are errors, except inside the free-form sections (`overrides`,
`pairs`, data specs). Re-running the same command resumes at the first unfinished stage.
"""

from __future__ import annotations

import copy

from .. import prompts
from ..config import apply_overrides, load_yaml
from ..errors import UserError

SAMPLE = {"n": 4, "temperature": 0.7, "top_p": 1.0, "max_new_tokens": 256}
DEFAULTS = {
    "name": None,  # run folder = OUT/NAME (default: the config file's stem)
    "out": "runs",
    "model": "smollm2-135m-instruct",
    "dtype": "auto", "device": "auto", "cache_dir": None, "data_dir": None,
    "backend": "hf", "batch_size": 32, "chunk": 64, "workers": 1,
    "sample_dtype": "auto", "kv_gb": None,  # hf backend: dtype to sample in, KV cache memory (GiB)
    "launcher": None,  # e.g. "accelerate launch --config_file configs/accelerate/zero3.yaml": training runs there
    "template": "chat-gsm8k", "calculator": False, "seed": 0,
    "recipe": ["dpo-st"],  # dpo-st, step-dpo, or both in the order to run them each iteration
    "iterations": 1,
    "use_solutions": "labelled",  # gold solutions as positives: true (all), labelled (warm-up set), false
    "train_data": None,  # {synth: {n, steps, seed, split}} or {dataset, split, limit}
    "test_sets": {},  # name -> data spec (+ optional: true to skip it when the data is missing)
    "warmup_sft": {"enabled": True, "limit": None, "lora": False, "overrides": {}},
    "sample": {**SAMPLE, "questions": None, "start": 0},  # a window of the training set per iteration
    "dpo": {"k": 3, "threshold": 0.7, "pool": True, "lora": False, "overrides": {}},
    # pool: true = the DPO models' samples of every iteration so far; all = also the samples DPO
    # pairs were made from; false = this iteration's DPO model only
    "rft": {**SAMPLE, "n": 3, "threshold": 0.7, "cap_percentile": 90, "pool": True},
    "sft": {"enabled": True, "restart": "base", "lora": False, "overrides": {}},
    "step": {**SAMPLE, "template": "chat-step", "temperature": 0.8, "top_p": 0.95, "questions": None, "pairs": {},
             "lora": False, "overrides": {}},
    "eval": {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 256, "ks": [],
             "after": ["warmup_sft", "dpo", "sft", "step_dpo"]},
    "curriculum": {"enabled": False, "min_pass": 0.0, "max_pass": 1.0},
}
FREE = {"overrides", "pairs", "train_data", "test_sets"}
RECIPES = ("dpo-st", "step-dpo")
EVAL_POINTS = ("base", "warmup_sft", "dpo", "sft", "step_dpo")


def _merge(base: dict, new: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        key = key.replace("-", "_")
        if key not in base:
            raise UserError(f"unknown loop option '{where}{key}'")
        if isinstance(base[key], dict) and key not in FREE:
            if not isinstance(value, dict):
                raise UserError(f"loop option '{where}{key}' must be a section")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = value
    return out


def load_config(path: str | None, overrides: list[str] = (), data: dict | None = None) -> dict:
    """DEFAULTS <- YAML file (or `data`) <- key=value overrides, checked."""
    raw = load_yaml(path) if path else copy.deepcopy(data or {})
    apply_overrides(raw, list(overrides))
    cfg = _merge(DEFAULTS, raw, "")
    if not cfg["name"]:
        from pathlib import Path

        cfg["name"] = Path(path).stem if path else "loop"
    return check(cfg)


def check(cfg: dict) -> dict:
    if isinstance(cfg["recipe"], str):
        cfg["recipe"] = [r.strip() for r in cfg["recipe"].split("+")]
    bad = [r for r in cfg["recipe"] if r not in RECIPES]
    if bad or not cfg["recipe"]:
        raise UserError(f"unknown recipe '{bad[0] if bad else ''}' (recipes: {', '.join(RECIPES)})")
    if not isinstance(cfg["train_data"], dict):
        raise UserError("train_data is required: {synth: {n: 400}} or {dataset: gsm8k, split: train}")
    if not isinstance(cfg["test_sets"], dict):
        raise UserError("test_sets must map a name to a data spec")
    if not isinstance(cfg["iterations"], int) or cfg["iterations"] < 0:
        raise UserError(f"iterations must be a non-negative integer, got {cfg['iterations']}")
    if cfg["sft"]["restart"] not in ("base", "warmup", "continue"):
        raise UserError(f"sft.restart must be base, warmup or continue, got {cfg['sft']['restart']}")
    if cfg["rft"]["pool"] not in (True, False, "all"):
        raise UserError(f"rft.pool must be true, false or all, got {cfg['rft']['pool']}")
    if cfg["use_solutions"] not in (True, False, "labelled"):
        raise UserError(f"use_solutions must be true, false or labelled, got {cfg['use_solutions']}")
    bad = [p for p in cfg["eval"]["after"] if p not in EVAL_POINTS]
    if bad:
        raise UserError(f"eval.after: unknown point '{bad[0]}' ({', '.join(EVAL_POINTS)})")
    for t in (cfg["template"], cfg["step"]["template"]):
        prompts.get(t)
    c = cfg["curriculum"]
    if not 0 <= c["min_pass"] <= c["max_pass"] <= 1:
        raise UserError("curriculum: need 0 <= min_pass <= max_pass <= 1")
    return cfg


def register(sub) -> None:
    parser = sub.add_parser("loop", help="self-training loop (DPO-ST, Step-DPO), resumable by stage",
                            description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML experiment file (configs/demo.yaml, configs/gsm8k.yaml, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any setting with a dotted key, e.g. iterations=2 dpo.overrides.beta=0.2")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..loop import run_loop

    cfg = load_config(args.config, args.overrides)
    run_loop(cfg)
    return 0
