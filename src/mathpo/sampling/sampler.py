"""Choosing the next token for a batch of rows: greedy, or temperature + top-p sampling where every
row draws from its own random stream.

Each row's stream is a counter-based generator keyed by (seed, prompt, sample index) and the step,
so a row's draws never depend on which other rows share its batch, on the batch size, or on the
order the scheduler admits prompts: the same seed and settings give the same samples (up to
floating-point differences between batch shapes). Sampling is by inverse CDF on one uniform per row.
Used by `engine.py` (the hf backend of `mathpo sample` / `eval`).
"""

from __future__ import annotations

import hashlib

import torch

from . import kernel

_MASK64 = (1 << 64) - 1
_TOP_P_CANDIDATES = (256, 4096)  # nucleus searched among these first; a full sort only if their mass is short
_OP_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what the fused sampler reads


def _mix(x: int) -> int:  # splitmix64's finalizer: a fixed, well-spread 64-bit hash
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def row_key(seed: int, prompt: str, sample: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{sample}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def uniform(key: int, step: int) -> float:
    """The row's draw for this step, in [0, 1)."""
    return (_mix(key ^ _mix(step)) >> 11) * (1.0 / (1 << 53))


def choose(logits: torch.Tensor, temperature: float, top_p: float, draws: list[float]) -> torch.Tensor:
    """Next token per row from logits [B, V] (in any float dtype; sampled in fp32, and fp32 logits
    may be overwritten); `draws` has one uniform per row."""
    if temperature <= 0:
        return logits.argmax(-1)
    ops = kernel.ops() if top_p >= 1 and logits.device.type == "cpu" and logits.dtype in _OP_DTYPES else None
    if ops is not None:  # the path below in one CPU op, the same picks (fused_ops.cpp)
        return ops.sample(logits.contiguous(), temperature, torch.tensor(draws, dtype=torch.float32))
    logits = logits.float()  # the same tensor when fp32
    # In place: three passes over [B, V] (scale, exp, cumsum) are most of the sampling cost.
    weights = logits.div_(temperature)
    weights = weights.sub_(weights.max(-1, keepdim=True).values).exp_()  # softmax up to a per-row factor
    u = torch.tensor(draws, dtype=weights.dtype, device=weights.device)[:, None]
    if top_p >= 1:
        cdf = weights.cumsum_(-1)
        pick = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
        return pick.clamp_(max=weights.shape[-1] - 1)[:, 0]
    probs = weights.div_(weights.sum(-1, keepdim=True))
    for k in _TOP_P_CANDIDATES:
        vals, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
        if bool((vals.sum(-1) >= top_p).all()):
            break
    else:
        vals, idx = probs.sort(dim=-1, descending=True)
    # The nucleus: the most likely tokens until their mass reaches top_p (the one crossing it included).
    before = vals.cumsum(-1) - vals
    vals = vals * (before < top_p)
    cdf = vals.cumsum(-1)
    pick = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).clamp_(max=vals.shape[-1] - 1)
    return idx.gather(-1, pick)[:, 0]
