"""Every shipped `configs/**.yaml` loads and checks, as torchtune tests its recipes' configs, so a config
cannot rot: loop configs through the loop's own loader (plus TRL fields, step-pair options and data
specs), train configs through `mathpo train`'s option loading (plus TRL and LoRA fields), accelerate
configs through accelerate's own config class (which rejects unknown keys)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mathpo import data, prompts
from mathpo.cli import build_parser
from mathpo.data import synth
from mathpo.pairs import steps
from mathpo.training import train_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TRAIN = sorted(CONFIGS.glob("train_*.yaml"))
LOOP = sorted(set(CONFIGS.glob("*.yaml")) - set(TRAIN))
ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.yaml"))
# Sections of a loop config that train, and the method each trains with.
LOOP_TRAINING = {"warmup_sft": "sft", "dpo": "dpo", "sft": "sft", "step": "dpo"}
# Keys of a training section's `overrides` that are mathpo's, not TRL's (the loop splits them off).
OWN = {"peft", "merge_lora", "data_dir"}


def load_loop_config(path: Path) -> dict:
    """The loader `mathpo loop` runs; the one place this file names it. Where vLLM is not installed, a
    `backend: vllm` config is checked as hf (the missing extra's own line is tested in test_optional_deps)."""
    import importlib.util

    from mathpo.loop_config import load_config

    overrides = [] if importlib.util.find_spec("vllm") else ["backend=hf"]
    return load_config(str(path), overrides)


def load_train_config(path: Path) -> dict:
    """`mathpo train --config PATH` as the command resolves it (defaults < file), before it trains."""
    args = build_parser().parse_args(["train", "--config", str(path)])
    return args.options.resolve(args)


def check_trl(method: str, fields: dict, lora: bool, tmp_path: Path) -> None:
    values = train_stage.config_values(method, tmp_path, lora, fields)  # unknown fields: UserError
    train_stage._trl_config_class(method)(**{**values, "use_cpu": True})  # TRL accepts the values


def check_spec(spec: dict) -> None:
    if "synth" in spec:
        s = spec["synth"]
        assert set(s) <= {"n", "steps", "seed", "split"}, s
        synth.parse_steps(s.get("steps", "1-4"))
        return
    name = spec["dataset"]
    assert set(spec) <= {"dataset", "split", "limit", "optional", "data_dir"}, spec
    if name in data.PRESETS:
        assert spec.get("split", "test") in data.PRESETS[name].files, spec
    else:
        assert name.startswith("hub:") or Path(name).suffix, spec


def test_every_config_is_checked():
    assert LOOP and TRAIN and ACCELERATE
    assert sorted(CONFIGS.rglob("*.yaml")) == sorted(LOOP + TRAIN + ACCELERATE)


@pytest.mark.parametrize("path", LOOP, ids=lambda p: p.name)
def test_loop_config(path, tmp_path):
    cfg = load_loop_config(path)
    assert cfg["name"] and (cfg["recipe"] or cfg["arms"])
    if path.name == "ablation.yaml":  # issue #16's ablation: the sizes its figures rely on
        assert set(cfg["arms"]) == {"st", "dpo-st", "full"} and cfg["iterations"] >= 2
        assert cfg["test_sets"]["synth"]["synth"]["n"] >= 500 and cfg["test_sets"]["multiarith"]["limit"] >= 300
        assert cfg["test_sets"]["gsm8k"]["limit"] >= 100
    for spec in [cfg["train_data"], *cfg["test_sets"].values()]:
        check_spec(spec)
    for section, method in LOOP_TRAINING.items():
        overrides = cfg[section].get("overrides") or {}
        check_trl(method, {k: v for k, v in overrides.items() if k not in OWN}, bool(cfg[section].get("lora")),
                  tmp_path)
    # step.pairs goes to steps.build as keywords, beside the ones the loop passes itself
    taken = {p.name for p in inspect.signature(steps.build).parameters.values() if p.kind == p.KEYWORD_ONLY}
    assert set(cfg["step"]["pairs"]) <= taken - {"seed", "progress"}, set(cfg["step"]["pairs"]) - taken


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.name)
def test_train_config(path, tmp_path):
    cfg = load_train_config(path)  # unknown top-level keys: UserError
    assert cfg["method"] in ("sft", "dpo")
    prompts.get(cfg["template"])
    if cfg["data"]:
        name, _, split = cfg["data"].partition(":")
        check_spec({"dataset": name, "split": split or "train"})
    check_trl(cfg["method"], cfg["trl"] or {}, bool(cfg["lora"]), tmp_path)
    if cfg["lora"]:
        train_stage.lora_config(cfg["peft"] or {})  # PEFT accepts the LoRA settings


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_config(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    cfg = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader: unknown keys raise
    assert cfg.compute_environment.value == "LOCAL_MACHINE" and cfg.mixed_precision in ("no", "fp16", "bf16")
    assert cfg.num_processes >= 1 and cfg.num_machines == 1 and cfg.machine_rank == 0
    if cfg.distributed_type == DistributedType.FSDP:
        assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    elif cfg.distributed_type == DistributedType.DEEPSPEED:
        ds = cfg.deepspeed_config
        assert ds["zero_stage"] == 3 and ds["zero3_save_16bit_model"]  # OUT/model is gathered at save time
        assert {ds["offload_optimizer_device"], ds["offload_param_device"]} <= {"none", "cpu", "nvme"}
    else:
        assert cfg.distributed_type == DistributedType.MULTI_GPU
