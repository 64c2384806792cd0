"""The transformers backend for `mathpo sample` / `eval` and the pairs stage's prefix sampling.

Continuous batching (`engine.py`): prompts sorted by length, each prefilled once (several packed
into one forward) into keys/values its n samples share, a prefix common to all prompts kept once,
finished rows replaced at once, slots sized to a memory budget, the calculator and stop strings per
row. Small calls (the pairs stage's prefix
rollouts) cost one packed prefill plus the decode steps; nothing is set up per call beyond a KV
buffer. On a CPU with native bf16 (AVX512-BF16 / AMX) an fp32 model samples through a bf16 copy
(`sample_dtype="auto"`); on a CPU (`pack_linears`, default on) the sampling copy's linear weights
are packed once for oneDNN (`packed.py`; bf16 there, fp32 on other CPUs) and its decoder layers'
small ops fused (`fused.py`); logits are sampled in fp32 (`sampler.py`, one CPU op at top-p 1).
Models whose attention does not go through transformers' AttentionInterface fall back to batched
`model.generate` (same rows, slower).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator

import torch

from ..errors import UserError
from ..models import cpu_has_bf16, dtype_named
from . import DECODE_ATTENTION, Completion, SamplingParams, Streaming, truncate_at_stop
from .calculator import CalculatorLogitsProcessor

log = logging.getLogger(__name__)

GiB = 1 << 30


def _dtype(name: str, model) -> torch.dtype:
    if name == "auto":
        if model.device.type == "cpu" and model.dtype == torch.float32 and cpu_has_bf16():
            return torch.bfloat16
        return model.dtype
    return dtype_named(name, "sample dtype")


def _default_kv_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.6)
    return int(1.5 * GiB)  # the CPU machines here are shared; raise it with kv_gb=...


class HFBackend(Streaming):
    name = "hf"

    def __init__(self, model, tokenizer, add_special_tokens: bool = False, batch_size: int | None = None,
                 sample_dtype: str = "auto", kv_gb: float | None = None, engine: str = "auto",
                 pack_linears: bool = True, decode_attention: str = "fused"):
        """batch_size: rows generated together at most (default 128 on CPU, 256 on CUDA; memory may cap
        it lower). engine: "auto" (continuous batching where the model allows), "continuous", "generate".
        On the 2-core CPU, greedy on 256 synthetic problems: 32 rows 364 tok/s, 64 473, 128 534, 256 583
        (bench/batch_size.py with the demo's warm-up model). pack_linears (CPU; default on): the sampling
        copy's linear weights packed once for oneDNN (`packed.py`) and its Llama/Qwen2 layers fused
        (`fused.py`): on the Zen 4 EPYC 1.17-1.20x the unpacked, unfused model (bench/sampling.py), equal to it
        up to the rounding of oneDNN's blocking (the fusion itself bit for bit); done on a copy, never on a
        caller's own model. decode_attention: "fused"
        (decode steps on CPU through mathpo's op, `kernel.py`, where it builds) or "flash" (PyTorch's)."""
        if decode_attention not in DECODE_ATTENTION:
            raise ValueError(f"decode_attention: {' or '.join(DECODE_ATTENTION)}, not {decode_attention!r}")
        self.tok = tokenizer
        self.add_special_tokens = add_special_tokens
        self.tok.padding_side = "left"
        dtype = _dtype(sample_dtype, model)
        # A bf16 copy for sampling leaves the caller's fp32 model untouched (training may share it).
        self.model = model if dtype == model.dtype else copy.deepcopy(model).to(dtype)
        self.model.eval()
        device = self.model.device
        self.batch_size = batch_size or (256 if device.type == "cuda" else 128)
        self.packed = 0  # linear layers packed (packed.py)
        self.fused = 0  # modules running fused forwards (fused.py)
        if pack_linears and device.type == "cpu":  # a CPU path: on GPUs there is nothing to pack
            self._pack(model)
        kv_bytes = int(kv_gb * GiB) if kv_gb else _default_kv_bytes(device)
        self.engine = None
        if engine != "generate":
            self.engine = self._make_engine(kv_bytes, engine == "continuous", decode_attention == "fused")

    def _pack(self, caller_model) -> None:
        """Pack the sampling model's linears and fuse its layers, on a copy of the backend's own."""
        from . import fused, packed

        if not packed.fits(self.model):  # checked first: a copy costs the model's size
            log.info("pack_linears: over %.0f GiB of linear weights; sampled as it is", packed.MAX_BYTES / GiB)
            return
        # the caller's model may be trained after this: never patched
        own = self.model if self.model is not caller_model else copy.deepcopy(caller_model).eval()
        self.packed = packed.pack(own)
        if not self.packed:  # the private op missing or refusing this dtype on this CPU
            log.warning("pack_linears: nothing packed (oneDNN's %s weight reorder does not work on this CPU)",
                        str(own.dtype).replace("torch.", ""))
            return
        self.fused = fused.fuse(own)
        self.model = own

    def _make_engine(self, kv_bytes: int, required: bool, fused: bool):
        from .engine import BatchEngine
        from .slots import NAME

        previous = getattr(self.model.config, "_attn_implementation", None)
        try:  # models off the AttentionInterface refuse (or ignore) a custom attention
            self.model.set_attn_implementation(NAME)
            ok = self.model.config._attn_implementation == NAME
            self.model.set_attn_implementation(previous)
        except (ValueError, AttributeError, TypeError) as e:
            log.info("continuous batching unavailable: %s", e)
            ok = False
        if not ok:
            if required:
                raise RuntimeError(f"{type(self.model).__name__} does not support continuous batching")
            return None
        return BatchEngine(self.model, self.tok, self.batch_size, kv_bytes, fused)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return [self.tok(p, add_special_tokens=self.add_special_tokens).input_ids for p in prompts]

    def generate_stream(self, prompts: list[str], params: SamplingParams) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (prompt index, its n completions) as prompts finish, in no fixed order."""
        if not prompts:
            return
        enc = self.encode(prompts)
        if not all(enc):
            raise UserError("an empty prompt has nothing to continue from")
        if self.engine is not None:
            from .slots import Unsupported

            try:
                yield from self.engine.stream(enc, prompts, params)
                return
            except Unsupported as e:  # raised at the first forward, before anything was yielded
                log.warning("continuous batching unsupported for this model (%s); using generate", e)
                self.engine = None
        yield from self._generate(enc, params)

    def _generate(self, enc: list[list[int]], params: SamplingParams) -> Iterator[tuple[int, list[Completion]]]:
        """Fallback: batched `model.generate` over length-sorted prompts (left padding)."""
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        per_batch = max(1, self.batch_size // params.n)
        torch.manual_seed(params.seed)
        sample = params.temperature > 0
        extra = {"logits_processor": [CalculatorLogitsProcessor(self.tok)]} if params.calculator else {}
        eos = self.tok.eos_token_id
        copies = params.n if sample else 1  # greedy samples are all alike: generate one, repeat it
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            batch = self.tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            with torch.inference_mode():
                seqs = self.model.generate(
                    **batch, max_new_tokens=params.max_new_tokens, do_sample=sample,
                    temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                    top_k=None, num_return_sequences=copies, pad_token_id=self.tok.pad_token_id,
                    stop_strings=list(params.stop) or None, tokenizer=self.tok if params.stop else None, **extra)
            rows = seqs[:, batch["input_ids"].shape[1]:].tolist()
            for j, i in enumerate(idx):
                completions = []
                for row in rows[j * copies:(j + 1) * copies] * (params.n // copies):
                    n_tok = row.index(eos) + 1 if eos in row else len([t for t in row if t != self.tok.pad_token_id])
                    text, stopped = truncate_at_stop(self.tok.decode(row[:n_tok], skip_special_tokens=True),
                                                     params.stop)
                    completions.append(Completion(text, n_tok, "stop" if stopped or eos in row else "length"))
                yield i, completions
