"""The hf backend's packed linear weights (mathpo/sampling/packed.py): logits equal up to rounding
(bf16 and fp32), the same samples, only on the backend's own copy, and nothing switched when it may
not be."""

import copy

import pytest
import torch

from mathpo.sampling import SamplingParams
from mathpo.sampling.hf import HFBackend
from mathpo.sampling.packed import _kernel_ok, pack
from test_sampling import sharpen

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
# oneDNN's bf16 weight reorder needs avx512bw/vl/dq or avx_ne_convert (an AVX2-only CPU, e.g. some
# EPYC VMs, lacks both): there `pack` must leave the model as it was, which the last test checks.
KERNEL = _kernel_ok(torch.bfloat16)
needs_kernel = pytest.mark.skipif(not KERNEL, reason="this CPU has no oneDNN bf16 weight reorder")
FP32 = _kernel_ok(torch.float32)  # any x86 CPU with oneDNN: what an AVX2-only CPU packs
needs_fp32 = pytest.mark.skipif(not FP32, reason="oneDNN's fp32 weight reorder is unavailable")

PROMPTS = ["Hello there", "What is 2+3?", "Step 1: Tom has 3 apples and buys 4 more."]


def linears(model):
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


def patched(model) -> int:
    return sum("forward" in vars(m) for m in linears(model))


@needs_kernel
def test_packed_logits_match_plain(tokenizer, tiny_model):
    plain = tiny_model.to(torch.bfloat16).eval()
    packed = copy.deepcopy(plain)
    assert pack(packed) == len(linears(packed)) == patched(packed) > 0
    ids = tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    with torch.inference_mode():
        for rows in (ids, ids.repeat(5, 1)):  # one row, and a batch: the packing holds for any shape
            # oneDNN may block the two paths differently at some shapes: the last bf16 bit may differ
            torch.testing.assert_close(packed(rows).logits, plain(rows).logits)


@needs_kernel
def test_backend_packs_its_own_copy_and_samples_the_same(tokenizer, tiny_model):
    sharpen(tiny_model)  # peaked distributions: a last-bit difference cannot move a draw to another token
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=3)
    on = HFBackend(tiny_model, tokenizer, sample_dtype="bf16", pack_linears=True)
    off = HFBackend(tiny_model, tokenizer, sample_dtype="bf16", pack_linears=False)
    assert on.packed == len(linears(tiny_model)) and off.packed == 0
    assert patched(tiny_model) == 0 and tiny_model.dtype == torch.float32  # the caller's model is untouched
    got = [[(c.text, c.tokens) for c in comps] for comps in on.generate(PROMPTS, params)]
    assert got == [[(c.text, c.tokens) for c in comps] for comps in off.generate(PROMPTS, params)]


@needs_fp32
def test_fp32_packed_logits_match_plain(tokenizer, tiny_model):
    plain = tiny_model.eval()
    packed = copy.deepcopy(plain)
    assert pack(packed) == len(linears(packed)) == patched(packed) > 0
    ids = tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    with torch.inference_mode():
        for rows in (ids, ids.repeat(5, 1)):
            got, want = packed(rows).logits, plain(rows).logits
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # summation order only
            assert got.dtype == torch.float32


@needs_fp32
def test_fp32_backend_packs_a_copy_and_samples_the_same(tokenizer, tiny_model):
    # an fp32 model sampled in fp32 (what an AVX2-only CPU does): the caller's model is never packed
    sharpen(tiny_model)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=3)
    on = HFBackend(tiny_model, tokenizer, sample_dtype="float32", pack_linears=True)
    off = HFBackend(tiny_model, tokenizer, sample_dtype="float32", pack_linears=False)
    assert on.packed == len(linears(tiny_model)) and off.packed == 0
    assert on.model is not tiny_model and off.model is tiny_model
    assert patched(tiny_model) == 0 and on.model.dtype == torch.float32
    got = [[(c.text, c.tokens) for c in comps] for comps in on.generate(PROMPTS, params)]
    assert got == [[(c.text, c.tokens) for c in comps] for comps in off.generate(PROMPTS, params)]


def test_a_callers_model_is_never_packed(tokenizer, tiny_model, caplog):
    model = tiny_model.to(torch.bfloat16)
    # the backend would sample the caller's model itself: it packs a copy, where this CPU can
    b = HFBackend(model, tokenizer, sample_dtype="bf16", pack_linears=True)
    assert patched(model) == 0 and model.dtype == torch.bfloat16
    if KERNEL:
        assert b.model is not model and b.packed == len(linears(b.model)) > 0 and b.fused > 0
    else:  # no bf16 reorder here: the copy is dropped, the caller's model sampled as it is
        assert b.model is model and b.packed == 0
        assert "pack_linears: nothing packed" in caplog.text  # asked for and not done: said so


def test_over_the_size_limit_nothing_is_switched(tokenizer, tiny_model, monkeypatch):
    import mathpo.sampling.packed as packed_module

    with monkeypatch.context() as m:  # too large to pack: the backend does not even copy it
        m.setattr(packed_module, "MAX_BYTES", 1)
        b = HFBackend(tiny_model, tokenizer, sample_dtype="float32", pack_linears=True)
        assert b.model is tiny_model and b.packed == 0 and patched(tiny_model) == 0
    model = tiny_model.to(torch.bfloat16)
    assert pack(model, max_bytes=1) == 0 and patched(model) == 0
    assert pack(copy.deepcopy(tiny_model).float(), max_bytes=1) == 0
    assert pack(tiny_model.half()) == 0 and patched(tiny_model) == 0  # fp16 layers are left alone


def test_the_option_reaches_the_backend(tokenizer, tiny_model, caplog):
    # `pack_linears` in a config / `--pack-linears` go through the one backend builder
    from types import SimpleNamespace

    from mathpo.sampling import BackendSettings, make_backend

    loaded = SimpleNamespace(model=tiny_model, tokenizer=tokenizer)
    on = make_backend(loaded, BackendSettings(sample_dtype="bf16", pack_linears=True))
    # where the CPU cannot pack, the request still arrives: it is refused with the warning
    assert on.packed > 0 if KERNEL else (on.packed == 0 and "pack_linears: nothing packed" in caplog.text)
    caplog.clear()
    assert make_backend(loaded, BackendSettings(sample_dtype="bf16", pack_linears=False)).packed == 0
    assert "pack_linears" not in caplog.text  # turned off: nothing said
    assert BackendSettings.of({"pack_linears": False, "sample_dtype": "bf16"}).pack_linears is False
    assert BackendSettings.of({"sample_dtype": "bf16"}).pack_linears is True  # on by default
    from mathpo.loop_config import load_config

    data = {"train_data": {"synth": {"n": 8}}}
    assert load_config(None, ["pack_linears=true"], data)["pack_linears"] is True  # a typed loop setting
    assert load_config(None, ["pack_linears=false"], data)["pack_linears"] is False
    assert load_config(None, [], data)["pack_linears"] is True


def test_without_the_kernel_nothing_is_switched(tokenizer, tiny_model, monkeypatch):
    # a CPU without the bf16 reorder (or a PyTorch whose private op changed): the model runs as before
    import mathpo.sampling.packed as packed_module

    monkeypatch.setattr(packed_module, "_kernel_ok", lambda dtype: False)
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    for dtype in packed_module.DTYPES:
        model = copy.deepcopy(tiny_model).to(dtype).eval()
        with torch.inference_mode():
            before = model(ids).logits
            assert pack(model) == 0 and patched(model) == 0
            assert torch.equal(model(ids).logits, before)
    b = HFBackend(tiny_model, tokenizer, sample_dtype="float32", pack_linears=True)
    assert b.model is tiny_model and b.packed == 0  # the copy made for packing is not kept
