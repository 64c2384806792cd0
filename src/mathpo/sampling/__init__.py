"""Sampling backends: turn prompts into completions. `hf` (transformers; CPU and CUDA) is the
default; `vllm` is used when vLLM is installed and asked for.

Backends share one interface so `mathpo sample`, `eval`, `pairs --kind step` and `loop` never
care which one runs:  backend.generate(prompts, params) -> one list of `Completion` per prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

from ..errors import UserError, require


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 0
    calculator: bool = False

    def __post_init__(self):
        if self.n < 1:
            raise UserError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Completion:
    text: str
    tokens: int  # generated tokens, stop string included
    finish: str  # "stop" (EOS or stop string) or "length"


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[str], params: SamplingParams,
                 progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
        """n completions for each prompt, in prompt order. `progress(k)` after k more prompts finish."""


BACKENDS = {"hf": None, "vllm": ("vllm", "vllm")}  # name -> (module, extra) it needs beyond the core


def loads_weights(name: str) -> bool:
    """Whether the backend samples from the torch model mathpo loads (hf), rather than loading the
    checkpoint itself (vllm): `models.load(..., weights=loads_weights(name))`."""
    return name == "hf"


def check_backend(name: str) -> None:
    """UserError for an unknown backend, or one whose extra is not installed (before a model loads)."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}' ({', '.join(BACKENDS)})")
    if BACKENDS[name]:
        module, extra = BACKENDS[name]
        require(module, extra, f"--backend {name}", load=False)


def get_backend(name: str, loaded, add_special_tokens: bool = False, **options) -> Backend:
    """Build a backend over an already loaded model (`mathpo.models.Loaded`)."""
    check_backend(name)
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(loaded.model, loaded.tokenizer, add_special_tokens=add_special_tokens, **options)
    from .vllm import VLLMBackend

    return VLLMBackend(loaded.path, add_special_tokens=add_special_tokens, **options)


class Streaming:
    """Base of backends that stream (`generate_stream` yields (prompt index, completions) as prompts
    finish, in no fixed order): `generate` collects that stream back into prompt order."""

    def generate(self, prompts: list[str], params: SamplingParams,
                 progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
        out: list[list[Completion]] = [[] for _ in prompts]
        for i, completions in self.generate_stream(prompts, params):
            out[i] = completions
            if progress:
                progress(1)
        return out


# The hf backend's decode attention on CPU: mathpo's fused op (sampling/kernel.py) or PyTorch's flash kernel
DECODE_ATTENTION = ("fused", "flash")
# vLLM engine arguments mathpo sets itself: the model comes from --model, the calculator is its processor
VLLM_OWN = {"model": "--model", "logits_processors": "the calculator"}


@dataclass(frozen=True)
class BackendSettings:
    """How a backend is built: the one home of the backend settings of `sample`, `eval`, `pairs` and
    `loop` (their `backend, batch_size, sample_dtype, kv_gb, pack_linears, decode_attention, vllm_args`
    keys). `kv_gb` sizes either backend's KV cache, `sample_dtype`, `pack_linears` and
    `decode_attention` (fused: mathpo's CPU op, `kernel.py`; flash: PyTorch's kernel) are the hf one's,
    `vllm_args` are vLLM engine arguments (`vllm.LLM(**vllm_args)`: tensor_parallel_size,
    max_num_seqs, ...; they win over mathpo's own CPU settings). `dtype` is the command's `--dtype`:
    the hf backend's model is loaded in it before the backend is built, vLLM loads its own in it."""
    name: str = "hf"
    batch_size: int | None = None
    sample_dtype: str = "auto"
    kv_gb: float | None = None
    pack_linears: bool = True  # CPU: packed linears and fused layers (hf.py); false turns both off
    decode_attention: str = "fused"
    vllm_args: dict = field(default_factory=dict)
    dtype: str = "auto"

    @classmethod
    def of(cls, cfg: dict) -> BackendSettings:
        """From a command's or the loop's settings (missing keys take their defaults)."""
        args = cfg.get("vllm_args") or {}
        if isinstance(args, str):  # --vllm-args '{max_num_seqs: 64}'
            from ..config import parse_value

            args = parse_value(args)
        if not isinstance(args, dict):
            raise UserError(f"vllm_args must be a mapping such as '{{max_num_seqs: 64}}', got {args!r}")
        return cls(cfg.get("backend") or "hf", cfg.get("batch_size"), cfg.get("sample_dtype") or "auto",
                   cfg.get("kv_gb"), cfg.get("pack_linears") is not False, cfg.get("decode_attention") or "fused",
                   {str(k): v for k, v in args.items()}, cfg.get("dtype") or "auto")

    def check(self) -> BackendSettings:
        """UserError for an unknown backend, a missing extra, or vllm_args that vLLM would refuse
        (checked against vLLM's EngineArgs, so a typo fails before any model loads)."""
        check_backend(self.name)
        if self.decode_attention not in DECODE_ATTENTION:
            raise UserError(f"decode_attention must be {' or '.join(DECODE_ATTENTION)}, got {self.decode_attention!r}")
        if not self.vllm_args:
            return self
        if self.name != "vllm":
            raise UserError(f"vllm_args are vLLM engine arguments; the {self.name} backend takes none")
        for key in self.vllm_args:
            if key in VLLM_OWN:
                raise UserError(f"vllm_args.{key}: mathpo sets it ({VLLM_OWN[key]})")
        import dataclasses

        from vllm.engine.arg_utils import EngineArgs

        from ..config import unknown_key

        names = {f.name for f in dataclasses.fields(EngineArgs)}
        for key in self.vllm_args:
            if key not in names:
                raise unknown_key(f"vllm_args.{key}", names, "vLLM engine argument")
        return self

    def options(self) -> dict:
        """The backend class's keyword arguments."""
        options = {"batch_size": self.batch_size, "kv_gb": self.kv_gb}
        if self.name == "hf":
            options.update(sample_dtype=self.sample_dtype, pack_linears=self.pack_linears,
                           decode_attention=self.decode_attention)
        else:
            options.update(dtype=self.dtype, **self.vllm_args)
        return options


def make_backend(loaded, settings: BackendSettings = BackendSettings(), template: str | None = None) -> Backend:
    """The one way `sample`, `eval`, `pairs --kind step` and `loop` build a backend: special tokens as the
    prompt template wants them."""
    from .. import prompts

    special = prompts.add_special_tokens(template) if template else False
    return get_backend(settings.name, loaded, add_special_tokens=special, **settings.options())


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut text at the earliest stop string (the stop string itself is dropped)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
