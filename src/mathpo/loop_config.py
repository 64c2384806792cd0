"""The settings of `mathpo loop CONFIG.yaml [key=value ...]` (mathpo.loop): one small dataclass per
section, loaded from YAML + dotted `key=value` overrides and checked completely before any work
starts -- the free-form parts too: every key under `*.overrides` against TRL's config class
(SFTConfig for warmup_sft / sft, DPOConfig for dpo / step), every key under `*.peft` against
PEFT's LoraConfig, every key under `step.pairs` against `pairs.step_options.StepPairOptions`.
A misspelt key fails in about a second with one line naming it and the nearest valid name.

    cfg = load_config("configs/demo.yaml", ["iterations=2"])   # the plain dict the stages read

It is a module of its own, beside mathpo.loop rather than inside a `loop/` package: the stages in
mathpo.loop keep their import path, and the settings can be read (and checked, by the CLI and by
tests) without importing anything that loads torch.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import prompts, train_options
from .config import apply_overrides, build_dataclass, load_yaml
from .errors import UserError
from .pairs.step_options import StepPairOptions

RECIPES = ("dpo-st", "step-dpo", "st")
EVAL_POINTS = ("base", "warmup_sft", "dpo", "sft", "step_dpo", "st")


@dataclass
class Sampling:
    """Sampling settings shared by the sampling sections."""
    n: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass
class Training:
    """Settings shared by the training sections; `overrides` are TRL config fields."""
    lora: bool = False
    peft: dict = field(default_factory=dict)  # LoraConfig fields (with lora: true)
    merge_lora: bool = True
    overrides: dict = field(default_factory=dict)


@dataclass
class Warmup(Training):
    """Warm-up SFT on the labelled records (iter_0/warmup_sft); overrides: SFTConfig fields."""
    enabled: bool = True
    limit: int | None = None  # the first N training records with a solution


@dataclass
class Sample(Sampling):
    """Sampling from the current model on this iteration's training questions. Equal budget: the
    `st` recipe draws sample.n + rft.n per question here, DPO-ST's two sampling stages together."""
    questions: int | None = None  # a window of that many training questions per iteration
    start: int = 0


@dataclass
class Dpo(Training):
    """DPO pairs and DPO training; overrides: DPOConfig fields."""
    k: int = 3  # pairs per question at most
    threshold: float = 0.7  # near-duplicate above this Jaccard similarity
    pool: bool = True  # true = the samples of every iteration so far; false = this iteration's


@dataclass
class Rft(Sampling):
    """Sampling from the DPO model and the RFT set made of its correct samples. Equal budget: the
    `st` recipe samples sample.n + rft.n per question from the current model instead."""
    n: int = 3
    threshold: float = 0.7
    cap_percentile: float = 90
    # true = the DPO models' samples of every iteration so far; all = also the samples DPO pairs
    # were made from; false = this iteration's DPO model only
    pool: bool | str = True


@dataclass
class Sft(Training):
    """SFT on the RFT set; overrides: SFTConfig fields."""
    enabled: bool = True
    restart: str = "base"  # base (as DPO-ST does), warmup, or continue from the model before


@dataclass
class Step(Training, Sampling):
    """Step-DPO: sampling, step pairs (`pairs`: StepPairOptions fields) and training (DPOConfig)."""
    temperature: float = 0.8
    top_p: float = 0.95
    template: str = "chat-step"
    questions: int | None = None  # the first N of the iteration's questions
    pairs: dict = field(default_factory=dict)


@dataclass
class Eval(Sampling):
    n: int = 1
    temperature: float = 0.0
    ks: list = field(default_factory=list)
    after: list = field(default_factory=lambda: ["warmup_sft", "dpo", "sft", "step_dpo", "st"])


@dataclass
class Curriculum:
    enabled: bool = False
    min_pass: float = 0.0
    max_pass: float = 1.0


@dataclass
class LoopConfig:
    name: str | None = None  # run folder = OUT/NAME (default: the config file's stem)
    out: str = "runs"
    model: str = "smollm2-135m-instruct"
    dtype: str = "auto"
    device: str = "auto"
    cache_dir: str | None = None
    data_dir: str | None = None
    backend: str = "hf"
    batch_size: int | None = None  # hf backend: rows decoded together (None: the backend's default)
    chunk: int = 64
    workers: int = 1
    sample_dtype: str = "auto"  # hf backend: dtype to sample in (auto, bf16, fp32)
    kv_gb: float | None = None  # hf backend: KV cache memory in GiB (default: its own)
    pack_linears: bool = True  # hf backend on CPU: linears packed, layers fused (sampling/packed.py, fused.py)
    decode_attention: str = "fused"  # hf backend on CPU: fused (mathpo's op, sampling/kernel.py) or flash
    vllm_args: dict = field(default_factory=dict)  # vllm backend: engine arguments (tensor_parallel_size, ...)
    # e.g. "accelerate launch --config_file configs/accelerate/zero3.yaml": training runs there
    launcher: str | None = None
    # sampling, rollouts and eval on a Ray cluster: an address, or {address: auto, workers, ...}
    # (mathpo.sampling.distributed_ray)
    ray: str | dict | None = None
    template: str = "chat-gsm8k"
    calculator: bool = False
    seed: int = 0
    recipe: list | str = field(default_factory=lambda: ["dpo-st"])  # run in this order each iteration
    # instead of `recipe`: several arms compared in one run, name -> recipe list, all from the same
    # warm-up model, shared stages run once (mathpo.loop_arms), e.g. {st: [st], dpo-st: [dpo-st]}
    arms: dict = field(default_factory=dict)
    iterations: int = 1
    use_solutions: bool | str = "labelled"  # gold solutions as positives: true, labelled, false
    train_data: dict | None = None  # {synth: {n, steps, seed, split}} or {dataset, split, limit}
    test_sets: dict = field(default_factory=dict)  # name -> data spec (+ optional: true)
    warmup_sft: Warmup = field(default_factory=Warmup)
    sample: Sample = field(default_factory=Sample)
    dpo: Dpo = field(default_factory=Dpo)
    rft: Rft = field(default_factory=Rft)
    sft: Sft = field(default_factory=Sft)
    step: Step = field(default_factory=Step)
    eval: Eval = field(default_factory=Eval)
    curriculum: Curriculum = field(default_factory=Curriculum)

    def as_dict(self) -> dict:
        """The plain dict the stages read (`cfg["sample"]["n"]`), also saved as RUN/config.json."""
        return dataclasses.asdict(self)


# (section, TRL config method) of the training sections
TRAINING = {"warmup_sft": "sft", "dpo": "dpo", "sft": "sft", "step": "dpo"}


def load(path: str | None, overrides: list[str] = (), data: dict | None = None) -> LoopConfig:
    """Defaults <- YAML file (or `data`) <- key=value overrides, checked (`check`)."""
    raw = load_yaml(path) if path else copy.deepcopy(data or {})
    apply_overrides(raw, list(overrides))
    if isinstance(raw, dict) and raw.get("arms") and "recipe" in raw:  # arms replace the recipe whole
        raise UserError("give either recipe (one run) or arms (several compared), not both: "
                        "each arm names its own recipe")
    cfg = build_dataclass(LoopConfig, raw, "", "loop option")
    if not cfg.name:
        cfg.name = Path(path).stem if path else "loop"
    return check(cfg)


def load_config(path: str | None, overrides: list[str] = (), data: dict | None = None) -> dict:
    """`load` as the plain dict that `mathpo.loop.run_loop` and its stages read."""
    return load(path, overrides, data).as_dict()


def _recipes(value, where: str) -> list[str]:
    names = [r.strip() for r in value.split("+")] if isinstance(value, str) else list(value)
    bad = [r for r in names if r not in RECIPES]
    if bad or not names:
        raise UserError(f"{where}: unknown recipe '{bad[0] if bad else ''}' (recipes: {', '.join(RECIPES)})")
    if len(set(names)) < len(names):  # each recipe's stages have one folder per iteration
        raise UserError(f"{where}: a recipe appears twice in {names}; use iterations to repeat it")
    return names


def check(cfg: LoopConfig) -> LoopConfig:
    """Every remaining rule, including the free-form sections; normalizes `recipe` to a list."""
    cfg.recipe = _recipes(cfg.recipe, "recipe")
    cfg.arms = {str(name): _recipes(r, f"arms.{name}") for name, r in cfg.arms.items()}
    for name in cfg.arms:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name == "data" or name.startswith("iter_"):
            raise UserError(f"arms: '{name}' cannot name a folder (letters, digits, - _ .; not data or iter_*)")
    if not isinstance(cfg.train_data, dict):
        raise UserError("train_data is required: {synth: {n: 400}} or {dataset: gsm8k, split: train}")
    check_data_spec(cfg.train_data, "train_data")
    for name, spec in cfg.test_sets.items():
        check_data_spec(spec, f"test_sets.{name}", test=True)
    for name in ("sample", "rft", "step", "eval"):  # SamplingParams' own rules, before any stage runs
        _sampling(getattr(cfg, name), name)
    for name, value in (("sample.questions", cfg.sample.questions), ("step.questions", cfg.step.questions),
                        ("warmup_sft.limit", cfg.warmup_sft.limit)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be a positive number (or left out: all), got {value}")
    if cfg.dpo.k < 1:
        raise UserError(f"dpo.k must be >= 1 (pairs per question), got {cfg.dpo.k}")
    if not 0 < cfg.rft.cap_percentile <= 100:
        raise UserError(f"rft.cap_percentile must be in (0, 100], got {cfg.rft.cap_percentile}")
    if cfg.iterations < 0:
        raise UserError(f"iterations must be a non-negative integer, got {cfg.iterations}")
    if cfg.sft.restart not in ("base", "warmup", "continue"):
        raise UserError(f"sft.restart must be base, warmup or continue, got {cfg.sft.restart}")
    if cfg.rft.pool not in (True, False, "all"):
        raise UserError(f"rft.pool must be true, false or all, got {cfg.rft.pool}")
    if cfg.use_solutions not in (True, False, "labelled"):
        raise UserError(f"use_solutions must be true, false or labelled, got {cfg.use_solutions}")
    bad = [p for p in cfg.eval.after if p not in EVAL_POINTS]
    if bad:
        raise UserError(f"eval.after: unknown point '{bad[0]}' ({', '.join(EVAL_POINTS)})")
    for t in (cfg.template, cfg.step.template):
        prompts.get(t)
    c = cfg.curriculum
    if not 0 <= c.min_pass <= c.max_pass <= 1:
        raise UserError("curriculum: need 0 <= min_pass <= max_pass <= 1")
    for section, method in TRAINING.items():
        s = getattr(cfg, section)
        if s.lora and not s.merge_lora:  # its output would be an adapter folder, which no later stage loads
            raise UserError(f"{section}.merge_lora: false is not supported in the loop (the next stage samples "
                            "from a whole model); keep the default true, or train the adapter with `mathpo train`")
        for own in ("peft", "merge_lora"):
            if own in s.overrides:
                raise UserError(f"{section}.overrides.{own}: mathpo's LoRA settings go in {section}.{own}")
        train_options.check_trl(method, s.overrides, f"{section}.overrides.")
        train_options.check_peft(s.peft, f"{section}.peft.")
    step_pair_options(cfg.as_dict())  # unknown keys, ranges, the judge's settings
    from .sampling import BackendSettings, distributed_ray  # light: name the extra when vllm/ray is missing

    BackendSettings.of(cfg.as_dict()).check()
    distributed_ray.settings(cfg.ray)  # its keys, and Ray installed
    return cfg


SYNTH_KEYS = {"n", "steps", "seed", "split"}
DATASET_KEYS = {"dataset", "split", "limit", "data_dir"}


def check_data_spec(spec, where: str, test: bool = False) -> None:
    """A data spec's shape (`mathpo.loop.load_spec` reads it): a mapping with `synth: {n, steps, seed,
    split}` or `dataset` (+ split, limit, data_dir); test sets may add `optional: true`. A misspelt key
    would otherwise fall back to a default silently (`spilt: train` read as the test split)."""
    from .config import unknown_key

    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a data spec such as {{dataset: gsm8k, split: test}}, got {spec!r}")
    own = ({"optional"} if test else set())
    if "synth" in spec:
        for key in spec:
            if key not in {"synth"} | own:
                raise unknown_key(f"{where}.{key}", {"synth"} | own, "data spec key")
        synth = spec["synth"] or {}
        if not isinstance(synth, dict):
            raise UserError(f"{where}.synth must be a section such as {{n: 200, steps: 1-4}}")
        for key in synth:
            if key not in SYNTH_KEYS:
                raise unknown_key(f"{where}.synth.{key}", SYNTH_KEYS, "synth key")
        return
    if not spec.get("dataset"):
        raise UserError(f"{where} needs 'dataset' or 'synth'")
    for key in spec:
        if key not in DATASET_KEYS | own:
            raise unknown_key(f"{where}.{key}", DATASET_KEYS | own, "data spec key")


def _sampling(section: Sampling, where: str) -> None:
    from .sampling import SamplingParams

    try:
        SamplingParams(n=section.n, temperature=section.temperature, top_p=section.top_p,
                       max_new_tokens=section.max_new_tokens)
    except UserError as e:
        raise UserError(f"{where}.{e}") from None


def step_pair_options(cfg: dict) -> StepPairOptions:
    """The loop's `step.pairs` as StepPairOptions: the run's seed, and the loop's calculator,
    unless `step.pairs` sets them."""
    pairs = cfg["step"]["pairs"] or {}
    return StepPairOptions.from_dict({"seed": cfg["seed"], "calculator": cfg["calculator"], **pairs}, "step.pairs.")
