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


def make_backend(loaded, name: str = "hf", template: str | None = None, batch_size: int | None = None,
                 sample_dtype: str = "auto", kv_gb: float | None = None, pack_linears: bool = False) -> Backend:
    """The one way `sample`, `eval`, `pairs --kind step` and `loop` build a backend: special tokens as the
    prompt template wants them; `kv_gb` sizes either backend's KV cache, `sample_dtype` and
    `pack_linears` are the hf one's."""
    from .. import prompts

    options = {"batch_size": batch_size, "kv_gb": kv_gb}
    if name == "hf":
        options["sample_dtype"] = sample_dtype
        options["pack_linears"] = pack_linears
    special = prompts.add_special_tokens(template) if template else False
    return get_backend(name, loaded, add_special_tokens=special, **options)


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut text at the earliest stop string (the stop string itself is dropped)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
