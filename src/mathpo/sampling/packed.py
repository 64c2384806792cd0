"""The linear layers of the hf backend's own sampling copy, with their weights packed once into
oneDNN's blocked layout (CPU only; on by default since 2026-12-08, `pack_linears: false` /
`--no-pack-linears` turns it off, and with it the fused layers of `fused.py`, which need it).

Why: `nn.Linear` on a CPU calls oneDNN's AMX matmul (bf16) with the weight in PyTorch's plain
layout, and oneDNN re-packs that weight at every call; in fp32 it calls MKL's sgemm with the weight
transposed, which on an AVX2-only EPYC runs at about half of oneDNN's speed (the 49152-word output
layer at 128 rows: 141 against 70 ms, 51 against 104 GFLOP/s, of ~120 a 2048^2 matmul reaches).
Packed once, each decode step's linears skip both: bf16 on the AMX Xeon 1.08x end to end (1.17-1.22x
since the fused decode attention), fp32 on the AVX2 EPYC 1.03x on the bench's 64 questions (163.6 /
158.3 tok/s, one run) and 1.20x on 32 (120.5 / 100.3) (`bench/sampling.py --runs mathpo,mathpo-packed`
then; `--runs mathpo,mathpo-unpacked` since packing is the default; README, `mathpo sample`).
Outputs equal `F.linear`'s up to rounding: in bf16 the same bits at most batch sizes (on the Zen 4
EPYC at every one tried, 1-400 rows), but where oneDNN blocks one path differently (on the AMX Xeon,
SmolLM2's shapes: 576x576 above 288 rows, the 192x576 k/v projections at 96) the last bit of some
outputs differs; in fp32 oneDNN's and MKL's summation
orders differ, so last bits differ at every shape (124 of 128 sampled texts the same on 32 GSM8K
questions x 4). The same kind of difference as between two batch shapes (tests/test_sampling_packed.py).
That is why it was opt-in until the layers were fused on top of it: one such bit early in `make demo`
(its warm-up evaluation) changed every stage's samples after it, and the final gain over warm-up went
from +18.5 to +11.0 points. Such runs are two draws of the same noise (seeds and paired statistics
measure it), and packed plus fused is 1.2x faster end to end, so it is the default; off, a run keeps
the bits of the unpacked layers.
The packed kernel is PyTorch's own `torch.ops.mkldnn._linear_pointwise`, the op `torch.compile`'s
CPU weight-freezing pass puts in place of linears. It is private API, so before any layer is
switched a small layer is packed and checked against `F.linear` in the model's dtype; if the op is
missing, refuses or disagrees, the model is left as it was. The bf16 reorder refuses on a CPU without
avx512bw/vl/dq or avx_ne_convert (e.g. an AVX2-only EPYC VM); fp32 packs on any x86 CPU.
Used by `hf.py` only, on a copy it makes itself, never on a caller's model (training may share it):
the copy and its packed weights cost the model's size in memory twice more, so only up to `MAX_BYTES`
of linear weights are packed.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MAX_BYTES = 2 << 30  # packed weights kept beside the plain ones: a model up to ~1B parameters
_BATCH_HINT = 128  # the rows the packing is tuned for (any batch runs; this is the engine's default)


DTYPES = (torch.bfloat16, torch.float32)


@functools.cache
def _kernel_ok(dtype: torch.dtype = torch.bfloat16) -> bool:
    """The private op exists and computes what F.linear does, on a small layer in `dtype`."""
    try:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 32, generator=gen).to(dtype)
        b = torch.randn(48, generator=gen).to(dtype)
        x = torch.randn(5, 32, generator=gen).to(dtype)
        got = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, 5), b, "none", [], "")
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-4
        return torch.allclose(got.float(), F.linear(x, w, b).float(), rtol=tol, atol=tol)
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        log.info("packed linears unavailable: %s", e)
        return False


def _forward(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def linear(weight: torch.Tensor, bias: torch.Tensor | None = None):
    """F.linear(x, weight, bias) as a function of x, with the weight packed once (also used by
    `fused.py` for the q|k|v and gate|up projections it concatenates)."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _BATCH_HINT)
    return functools.partial(_forward, packed, None if bias is None else bias.detach())


def _linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.modules()
            if type(m) is torch.nn.Linear and m.weight.dtype == model.dtype and m.weight.device.type == "cpu"]


def _bytes(linears) -> int:
    return sum(m.weight.numel() * m.weight.element_size() for m in linears)


def fits(model, max_bytes: int | None = None) -> bool:
    """Its packable linear weights are at most `max_bytes` (default MAX_BYTES); checked before a copy is made."""
    return _bytes(_linears(model)) <= (MAX_BYTES if max_bytes is None else max_bytes)


def pack(model, max_bytes: int | None = None) -> int:
    """Switch every plain `nn.Linear` of `model` (on CPU, in the model's dtype: bf16 or fp32) to a
    packed copy of its weight; returns how many were switched (0: the model is unchanged)."""
    linears = _linears(model)
    if (not linears or model.dtype not in DTYPES or not fits(model, max_bytes)
            or not torch.backends.mkldnn.is_available() or not _kernel_ok(model.dtype)):
        return 0
    with torch.no_grad():
        for m in linears:
            m.forward = linear(m.weight, m.bias)  # an instance attribute: nn.Module.__call__ runs it
    log.info("packed %d linear layers (%.0f MB) for sampling", len(linears), _bytes(linears) / 1e6)
    return len(linears)
