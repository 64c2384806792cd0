"""mathpo's CPU ops, built once per machine with `torch.utils.cpp_extension` into one library
loaded as `torch.ops.mathpo`: the fused decode attention (`decode_attention.cpp`, `op()`) and the
fused small ops of a decoder layer and the sampler (`fused_ops.cpp`, `ops()`: rms_norm, silu_mul,
rotary, sample; used by `fused.py`).

Built for the CPU's own vector width (PyTorch's `get_cpu_capability`: AVX512, AVX2, else plain C++;
with AVX512-BF16's dot products where the CPU has them), into torch's extension cache under a name
that carries both, so a home folder shared by different machines never loads a build made for
another CPU. Where it cannot be built (no compiler, no ninja)
`op()` and `ops()` are None, with one warning: `slots.py` attends through PyTorch's flash kernel
as before and `fused.py` leaves the model's own forwards in place.
Used by `slots.py` in the hf backend's decode steps (`mathpo sample`, `eval`, the loop).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch

from ..models import cpu_flag

SOURCES = [str(Path(__file__).with_name(name)) for name in ("decode_attention.cpp", "fused_ops.cpp")]
FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2"],
}


@functools.cache
def op():
    """torch.ops.mathpo.decode_attention, or None where it cannot be built here."""
    capability = torch.backends.cpu.get_cpu_capability()
    capability = capability if capability in FLAGS else "DEFAULT"
    flags = [f"-DCPU_CAPABILITY={capability}", *FLAGS.get(capability, [])]
    if capability == "AVX512" and cpu_flag("avx512_bf16"):
        capability, flags = "AVX512_BF16", [*flags, "-mavx512bf16"]
    try:
        from torch.utils import cpp_extension
        cpp_extension.load(f"mathpo_ops_{capability.lower()}", SOURCES, is_python_module=False,
                           extra_cflags=["-O3", "-fopenmp", *flags],
                           extra_ldflags=["-fopenmp"])  # at::parallel_for is OpenMP, inlined from headers
    except Exception as e:  # noqa: BLE001 - any build failure leaves the flash path, which is correct
        warnings.warn(f"mathpo: the fused CPU ops could not be built ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); decoding with PyTorch's flash kernel",
                      RuntimeWarning, stacklevel=2)
        return None
    return torch.ops.mathpo.decode_attention


def ops():
    """torch.ops.mathpo (every op of the library), or None where it cannot be built here."""
    return torch.ops.mathpo if op() is not None else None
