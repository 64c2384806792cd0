"""The slot KV cache's decode attention: a prompt's keys/values shared by its samples, merged with each
row's own by log-sum-exp, equals plain attention over the row's whole sequence (prompt + generated)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mathpo.sampling.slots import SlotCache, slot_attention


@pytest.mark.parametrize("fused", [True, False])  # the fused CPU op (kernel.py) / PyTorch's flash kernel
@pytest.mark.parametrize("common", [0, 7])  # without / with a prefix common to every prompt
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("heads,kv,dim", [(6, 2, 64), (14, 2, 128)])  # SmolLM2-like; Qwen2.5-0.5B's shape
def test_shared_prompt_decode_equals_full_attention(dtype, tol, common, fused, heads, kv, dim):
    torch.manual_seed(0)
    n = 3
    # per prompt slot (what follows the common prefix); lengths across the op's 16-position blocks
    prompt_lens = [5, 37, 1]
    # rows: (prompt slot, sample, tokens already generated); prompt slot 1 has lost sample 0 (a hole)
    rows = [(0, 0, 0), (0, 1, 4), (0, 2, 33), (1, 2, 6), (2, 0, 16), (1, 1, 47)]
    cache = SlotCache(1, 6, kv, max(prompt_lens), 48, dim, n, dtype, "cpu", common_len=common, group=heads // kv)
    assert cache.fused  # the op builds on this machine, for every dtype
    cache.fused = fused
    for part in (cache.prompt_keys, cache.prompt_values, cache.keys, cache.values, cache.common_keys,
                 cache.common_values):
        for t in part:
            t.normal_()
    cache.prepare_decode([g for _, _, g in rows], [p for p, _, _ in rows], [s for _, s, _ in rows], prompt_lens)
    query = torch.randn(len(rows), heads, 1, dim, dtype=dtype)
    key = torch.randn(len(rows), kv, 1, dim, dtype=dtype)
    value = torch.randn(len(rows), kv, 1, dim, dtype=dtype)
    out, _ = slot_attention(SimpleNamespace(layer_idx=0), query, key, value, None, scaling=dim ** -0.5,
                            mathpo_kv=cache)
    assert out.shape == (len(rows), 1, heads, dim) and out.dtype == dtype
    for b, (p, _, g) in enumerate(rows):
        # the new key/value went to the row's own position; the whole sequence is prompt + its tokens
        assert torch.equal(cache.keys[0][b, :, g], key[b, :, 0])
        k = torch.cat([*[c[0] for c in cache.common_keys], cache.prompt_keys[0][p, :, :prompt_lens[p]],
                       cache.keys[0][b, :, :g + 1]], dim=1)
        v = torch.cat([*[c[0] for c in cache.common_values], cache.prompt_values[0][p, :, :prompt_lens[p]],
                       cache.values[0][b, :, :g + 1]], dim=1)
        ref = F.scaled_dot_product_attention(query[b:b + 1].double(), k[None].double(), v[None].double(),
                                             enable_gqa=True)
        assert torch.allclose(out[b, 0].double(), ref[0, :, 0], atol=tol, rtol=tol), b


def test_fused_op_left_out_where_it_does_not_apply():
    # head_dim not a multiple of 32, more than 16 query heads per kv head, or not on the CPU: flash
    assert not SlotCache(1, 2, 1, 4, 4, 16, 1, torch.float32, "cpu").fused
    assert not SlotCache(1, 2, 1, 4, 4, 64, 1, torch.float32, "cpu", group=32).fused
    assert not SlotCache(1, 2, 1, 4, 4, 64, 1, torch.float64, "cpu").fused
    assert SlotCache(1, 2, 1, 4, 4, 64, 1, torch.float32, "cpu", group=16).fused


def test_prefill_writes_each_prompt_once_into_its_slot():
    torch.manual_seed(1)
    cache = SlotCache(1, 4, 1, 6, 4, 8, 2, torch.float32, "cpu")
    cache.prepare_prefill([(0, 4, 2), (4, 7, 0)])  # two prompts packed in one sequence
    q, k, v = (torch.randn(1, 2, 7, 8) for _ in range(3))
    k, v = k[:, :1], v[:, :1]
    out, _ = slot_attention(SimpleNamespace(layer_idx=0), q, k, v, None, scaling=8 ** -0.5, mathpo_kv=cache)
    assert torch.equal(cache.prompt_keys[0][2, :, :4], k[0, :, :4])
    assert torch.equal(cache.prompt_values[0][0, :, :3], v[0, :, 4:7])
    assert not cache.prompt_keys[0][1].any()  # untouched slots stay empty
    second = F.scaled_dot_product_attention(q[:, :, 4:], k[:, :, 4:], v[:, :, 4:], is_causal=True, enable_gqa=True)
    assert torch.allclose(out[:, 4:].transpose(1, 2), second, atol=1e-6)  # causal within its own prompt only


def test_common_prefix_prefilled_once_and_seen_whole_by_every_prompt():
    torch.manual_seed(2)
    common, layer = 5, SimpleNamespace(layer_idx=0)
    cache = SlotCache(1, 4, 1, 6, 4, 8, 2, torch.float32, "cpu", common_len=common)
    qc, kc, vc = torch.randn(1, 2, common, 8), torch.randn(1, 1, common, 8), torch.randn(1, 1, common, 8)
    cache.prepare_common()
    first, _ = slot_attention(layer, qc, kc, vc, None, scaling=8 ** -0.5, mathpo_kv=cache)
    assert torch.equal(cache.common_keys[0], kc) and torch.equal(cache.common_values[0], vc)
    assert not cache.prompt_keys[0].any()  # the prefix goes to no prompt slot
    cache.prepare_prefill([(0, 4, 2), (4, 7, 0)])  # then the rest of two prompts, packed
    q, k, v = (torch.randn(1, 2, 7, 8) for _ in range(3))
    k, v = k[:, :1], v[:, :1]
    out, _ = slot_attention(layer, q, k, v, None, scaling=8 ** -0.5, mathpo_kv=cache)
    assert torch.equal(cache.prompt_keys[0][2, :, :4], k[0, :, :4])
    assert torch.equal(cache.prompt_values[0][0, :, :3], v[0, :, 4:7])
    for start, end in [(0, 4), (4, 7)]:  # each prompt: plain causal attention over prefix + its own tokens
        whole = [torch.cat([a, b[:, :, start:end]], dim=2) for a, b in ((qc, q), (kc, k), (vc, v))]
        ref = F.scaled_dot_product_attention(*whole, is_causal=True, enable_gqa=True)
        assert torch.allclose(first.transpose(1, 2), ref[:, :, :common], atol=1e-6)
        assert torch.allclose(out[:, start:end].transpose(1, 2), ref[:, :, common:], atol=1e-6)


def test_a_failed_build_leaves_the_flash_path_with_a_warning(monkeypatch):
    from torch.utils import cpp_extension

    from mathpo.sampling import kernel

    def no_compiler(*a, **k):
        raise RuntimeError("Error building extension 'mathpo_decode': c++: not found")
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    kernel.op.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="could not be built .*c\\+\\+: not found.*flash kernel"):
            assert kernel.op() is None
        assert not SlotCache(1, 2, 1, 4, 4, 64, 1, torch.float32, "cpu").fused  # decodes as before
    finally:
        monkeypatch.undo()
        kernel.op.cache_clear()
    assert kernel.op() is not None  # built again (from torch's extension cache) once it can be
