"""The linear layers of the hf backend's own bf16 sampling copy, with their weights packed once into
oneDNN's blocked layout (CPU only; opt-in: `pack_linears: true`, `--pack-linears`).

Why: `nn.Linear` on a CPU calls oneDNN's AMX matmul with the weight in PyTorch's plain layout, and
oneDNN re-packs that weight at every call. Packed once, each decode step's linears skip it: the
hf engine samples 1.08x faster on the 2-core CPU (`bench/sampling.py --runs mathpo,mathpo-packed`;
README, `mathpo sample`). Outputs equal `F.linear`'s up to bf16 rounding: the same bits at most
batch sizes, but where oneDNN blocks one path differently (on SmolLM2's shapes: 576x576 above 288
rows, the 192x576 k/v projections at 96) the last bit of some outputs differs, the same kind of
difference as between two batch shapes (tests/test_sampling_packed.py). That is why it is opt-in,
as PyTorch leaves TF32 matmuls off: one such bit early in `make demo` (its warm-up evaluation)
changed every stage's samples after it, and the final gain over warm-up went from +18.5 to +11.0
points. Off, a run keeps the bits of runs before it.
The packed kernel is PyTorch's own `torch.ops.mkldnn._linear_pointwise`, the op `torch.compile`'s
CPU weight-freezing pass puts in place of linears. It is private API, so before any layer is
switched a small layer is packed and checked against `F.linear`; if the op is missing, refuses or
disagrees, the model is left as it was. It refuses on a CPU without avx512bw/vl/dq or avx_ne_convert
(oneDNN's bf16 reorder; e.g. an AVX2-only EPYC VM), so there `--pack-linears` only logs a warning.
Used by `hf.py` only, on the bf16 copy it makes itself, never on a caller's model: the packed
weights cost their size in memory once more, so the copy is packed only up to `MAX_BYTES`.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

MAX_BYTES = 2 << 30  # packed weights kept beside the plain ones: a model up to ~1B parameters
_BATCH_HINT = 128  # the rows the packing is tuned for (any batch runs; this is the engine's default)


def _kernel_ok() -> bool:
    """The private op exists and computes what F.linear does, on a small layer."""
    try:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(48, 32, generator=gen).to(torch.bfloat16)
        b = torch.randn(48, generator=gen).to(torch.bfloat16)
        x = torch.randn(5, 32, generator=gen).to(torch.bfloat16)
        got = torch.ops.mkldnn._linear_pointwise(x, torch.ops.mkldnn._reorder_linear_weight(w, 5), b, "none", [], "")
        return torch.allclose(got.float(), F.linear(x, w, b).float(), rtol=1e-2, atol=1e-2)
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        log.info("packed linears unavailable: %s", e)
        return False


def _forward(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def pack(model, max_bytes: int = MAX_BYTES) -> int:
    """Switch every plain bf16 `nn.Linear` of `model` (on CPU) to a packed copy of its weight;
    returns how many were switched (0: the model is unchanged)."""
    linears = [m for m in model.modules()
               if type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16 and m.weight.device.type == "cpu"]
    size = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    if not linears or size > max_bytes or not torch.backends.mkldnn.is_available() or not _kernel_ok():
        return 0
    with torch.no_grad():
        for m in linears:
            packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), _BATCH_HINT)
            bias = None if m.bias is None else m.bias.detach()
            # an instance attribute: nn.Module.__call__ runs it in place of Linear.forward
            m.forward = functools.partial(_forward, packed, bias)
    log.info("packed %d linear layers (%.0f MB) for sampling", len(linears), size / 1e6)
    return len(linears)
