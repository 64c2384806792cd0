"""bench/decode_split.py: its timers see the engine's attention, count the bytes it reads, and leave the
engine as they found it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mathpo.sampling import SamplingParams, slots
from mathpo.sampling.hf import HFBackend

spec = importlib.util.spec_from_file_location("decode_split", Path(__file__).parents[1] / "bench/decode_split.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("attention", ["fused", "flash"])
def test_timers_count_decode_bytes_and_restore_the_engine(tiny_model, tokenizer, attention):
    backend = HFBackend(tiny_model, tokenizer, sample_dtype="float32", decode_attention=attention)
    decode, prefill, forward = slots._decode, slots._prefill, type(backend.model).forward
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=6, seed=0)
    wall, tokens, st = bench.timed_attention(backend, ["Question: 1+1?\nAnswer:", "Question: 2+5?\nAnswer:"], params)
    assert tokens == sum(c.tokens for comps in backend.generate(["Question: 1+1?\nAnswer:",
                                                                "Question: 2+5?\nAnswer:"], params) for c in comps)
    layers = tiny_model.config.num_hidden_layers
    assert st["calls"]["prefill"] == layers  # both prompts in one packed prefill
    assert st["calls"]["decode"] % layers == 0 and st["calls"]["decode"] > 0
    # each decode call reads at least the 4 rows' first own position, K and V, fp32
    config = tiny_model.config
    kv, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    assert st["bytes"]["decode"] >= st["calls"]["decode"] * 4 * kv * head_dim * 2 * 4
    assert 0 < st["seconds"]["decode"] <= st["forward_s"] <= wall
    assert (slots._decode, slots._prefill) == (decode, prefill)
    assert "forward" not in vars(backend.model) and type(backend.model).forward is forward
