"""Shared fixtures: the SmolLM2 tokenizer and tiny random Llama models built from it in-process.

No network: the tokenizer comes from the embedded GGUF (converted once into the mathpo cache).
The real 135M model is used only by tests marked `real_model`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MATHPO_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def smol_path() -> Path:
    from mathpo import models

    return Path(models.resolve("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tokenizer(smol_path):
    from mathpo import models

    return models.load_tokenizer(str(smol_path))


def make_tiny_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      # head_dim 32 at the default width: the hf engine's fused decode op applies
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer) -> Path:
    """A saved tiny random model folder (with the SmolLM2 tokenizer) that any command can load."""
    path = tmp_path_factory.mktemp("tiny-model")
    make_tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model(tokenizer):
    return make_tiny_model(tokenizer)


def needs_data(*rel: str):
    missing = [r for r in rel if not (DATA / r).is_file()]
    return pytest.mark.skipif(bool(missing), reason=f"benchmark data not found under {DATA}")


def cli_error(err: str) -> str:
    """The one error line a failed command printed on stderr (progress bars may share stderr); asserts
    there is exactly one and no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("mathpo ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]
