"""The fused decoder layers of the hf backend's packed sampling copy (mathpo/sampling/fused.py) and
the fused sampler (fused_ops.cpp): each op against the transformers / PyTorch code it replaces,
bit for bit; fused models against unfused ones, logits and samples equal; only known modules
fused; nothing changed where the ops are missing."""

import copy

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from mathpo.sampling import SamplingParams, fused, kernel, sampler
from mathpo.sampling.hf import HFBackend
from mathpo.sampling.packed import _kernel_ok, pack

OPS = kernel.ops()
pytestmark = pytest.mark.skipif(OPS is None, reason="mathpo's CPU ops could not be built here")
DTYPES = [torch.bfloat16, torch.float32, torch.float16]
PROMPTS = ["Hello there", "What is 2+3?", "Step 1: Tom has 3 apples and buys 4 more. He now has"]


def hidden(rows: int, width: int, dtype, seed: int = 0) -> torch.Tensor:
    """Hidden states as a model's look: most values small, a few channels hundreds of times larger."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=gen) * torch.rand(rows, 1, generator=gen) * 4
    x[:, torch.randint(0, width, (3,), generator=gen)] *= 200
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [64, 100, 576, 1536, 2048])  # a scalar tail; the sum's cascade from 1,024
def test_rms_norm_is_transformers_bit_for_bit(dtype, width):
    norm = LlamaRMSNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(width) + 0.5)
    norm = norm.to(dtype)
    x = hidden(64, width, dtype).view(8, 8, width)
    with torch.inference_mode():
        assert torch.equal(OPS.rms_norm(x, norm.weight, 1e-5), norm(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_is_torch_bit_for_bit(dtype):
    x = hidden(48, 2 * 1536, dtype, seed=1).view(4, 12, -1)
    gate, up = x.chunk(2, dim=-1)
    assert torch.equal(OPS.silu_mul(x), F.silu(gate) * up)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_cos", [1, 3])  # prefill (positions [1, T]) and decode ([B, 1]) shapes
def test_rotary_is_transformers_bit_for_bit(tiny_model, dtype, batch_cos):
    heads, kv_heads, head_dim, seq = 9, 3, 64, 5
    qkv = hidden(3 * seq, (heads + 2 * kv_heads) * head_dim, dtype, seed=2).view(3, seq, -1)
    positions = (torch.arange(seq)[None] + torch.tensor([[0], [40], [900]]))[:batch_cos]
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = positions[..., None].float() * inv
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
    q, k = OPS.rotary(qkv, cos, sin, heads, kv_heads)
    want_q, want_k = apply_rotary_pos_emb(qkv[..., :heads * head_dim].view(3, seq, heads, head_dim).transpose(1, 2),
                                          qkv[..., heads * head_dim:(heads + kv_heads) * head_dim]
                                          .view(3, seq, kv_heads, head_dim).transpose(1, 2), cos, sin)
    assert torch.equal(q.transpose(1, 2), want_q) and torch.equal(k.transpose(1, 2), want_k)


def python_choose(logits, temperature, draws):
    ops = kernel.ops
    try:
        kernel.ops = lambda: None
        return sampler.choose(logits.clone(), temperature, 1.0, draws)
    finally:
        kernel.ops = ops


@pytest.mark.parametrize("vocab,scale", [(49152, 3.0), (49152, 12.0), (1000, 1.0), (17, 20.0)])
def test_sample_picks_what_the_python_path_picks(vocab, scale):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(64, vocab, generator=gen) * scale
    logits[:8, :5] += 40  # peaked rows: the pick falls in the first block
    for temperature in (0.3, 0.7, 1.0):
        draws = torch.rand(64, generator=gen).tolist()
        draws[0], draws[1] = 0.0, 1.0 - 2 ** -53  # both ends of the CDF
        before = logits.clone()
        got = OPS.sample(logits, temperature, torch.tensor(draws))
        assert torch.equal(logits, before)  # the op leaves its input alone (the Python path overwrites)
        assert got.tolist() == python_choose(logits, temperature, draws).tolist()
        low = logits.bfloat16()  # the engine hands over logits in the model's dtype: read as they are
        assert OPS.sample(low, temperature, torch.tensor(draws)).tolist() == \
            python_choose(low.float(), temperature, draws).tolist()


def fused_copy(model, dtype=torch.bfloat16):
    plain = copy.deepcopy(model).to(dtype).eval()
    packed, done = copy.deepcopy(plain), copy.deepcopy(plain)
    assert pack(packed) == pack(done) > 0
    return plain, packed, done, fused.fuse(done)


def tiny_qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id)
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # its q/k/v biases (Qwen2 has them) away from zero, so that they count
        for layer in model.model.layers:
            for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                p.bias.normal_(0, 0.5)
    return model


@pytest.mark.skipif(not _kernel_ok(torch.bfloat16), reason="this CPU has no oneDNN bf16 weight reorder")
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_fused_model_computes_the_unfused_ones_logits(tokenizer, tiny_model, arch):
    model = tiny_model if arch == "llama" else tiny_qwen2(tokenizer)
    plain, packed, done, count = fused_copy(model)
    layers = len(model.model.layers)
    assert count == 4 * layers + 1  # 2 norms, the attention and the MLP per layer; the final norm
    ids = tokenizer(PROMPTS[2], return_tensors="pt").input_ids
    with torch.inference_mode():
        for rows in (ids, ids.repeat(5, 1)):
            want = packed(rows).logits
            assert torch.equal(done(rows).logits, want)  # fused = packed, bit for bit
            torch.testing.assert_close(want, plain(rows).logits)  # and packed = plain up to rounding
        assert torch.equal(done(ids, use_cache=True).logits, packed(ids).logits)  # the DynamicCache path


@pytest.mark.skipif(not _kernel_ok(torch.bfloat16), reason="this CPU has no oneDNN bf16 weight reorder")
def test_the_backend_samples_the_same_fused_or_not(tokenizer, tiny_model, monkeypatch):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=5)
    on = HFBackend(tiny_model, tokenizer, sample_dtype="bf16", pack_linears=True)
    with monkeypatch.context() as m:
        m.setattr(fused, "fuse", lambda model: 0)
        off = HFBackend(tiny_model, tokenizer, sample_dtype="bf16", pack_linears=True)
    assert on.fused == 4 * len(tiny_model.model.layers) + 1 and off.fused == 0
    got = [[(c.text, c.tokens) for c in comps] for comps in on.generate(PROMPTS, params)]
    assert got == [[(c.text, c.tokens) for c in comps] for comps in off.generate(PROMPTS, params)]
    assert all("forward" not in vars(m) for m in tiny_model.modules())  # the caller's model untouched


def test_unknown_modules_and_a_missing_library_leave_the_model_as_it_was(tokenizer, tiny_model, monkeypatch):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2)).eval()
    assert fused.fuse(gpt2) == 0 and all("forward" not in vars(m) for m in gpt2.modules())
    half = copy.deepcopy(tiny_model).half()  # oneDNN packs no fp16 linears, so nothing is fused
    assert fused.fuse(half) == 0 and all("forward" not in vars(m) for m in half.modules())
    monkeypatch.setattr(kernel, "ops", lambda: None)
    model = copy.deepcopy(tiny_model).to(torch.bfloat16)
    assert fused.fuse(model) == 0 and all("forward" not in vars(m) for m in model.modules())
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert sampler.choose(logits.repeat(3, 1), 1.0, 1.0, [0.1, 0.6, 0.99]).tolist() == [0, 1, 3]  # Python path
