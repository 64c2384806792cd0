"""Fused decoder layers for the hf backend's own packed sampling copy (CPU; with `pack_linears`).

Why: with its linears packed (`packed.py`) and its attention fused (`kernel.py`), a decode step of
a 135M model still ran ~55 PyTorch ops per layer besides them (RMSNorm alone 8, rotary 14), each
costing its dispatch and a temporary: on the bench's workload ~12% of CPU time, plus the Python
around them. Here, per layer:
- each RMSNorm is one op (`rms_norm`);
- the q, k and v projections are one packed matmul of their concatenated weights, and the rotary
  embedding of q and k one op (`rotary`) on its output;
- the MLP's gate and up projections are one packed matmul, and SiLU(gate) * up one op (`silu_mul`).
The ops (`fused_ops.cpp`) round to the model's dtype where the transformers code they replace
rounds and sum RMSNorm's squares in the order PyTorch's CPU sum kernel does, and SiLU takes the same
vectorized exp as PyTorch's kernel: a fused model's logits equal the packed unfused model's bit for
bit (tests/test_sampling_fused.py: Llama and Qwen2, bf16, fp32 and fp16 ops; on x86, where those
kernels' vector widths are what the ops assume). The concatenated projections gave the same bits as
three separate packed matmuls at every batch size tried (1-400 rows); oneDNN could block them
differently on another CPU, which would differ in a last bit, as two batch shapes do. A decode step
of SmolLM2-135M's layers at 128 rows: 1.08x (`bench/fused_layers.py`); end to end 1.17-1.20x over
the unpacked, unfused model with the packing (`bench/sampling.py --runs mathpo,mathpo-unpacked`).

Only modules whose forward is known are fused: the `Llama*` and `Qwen2*` attention, MLP and RMSNorm
classes of transformers (with SiLU, no MLP bias, no q/k norms); every other module keeps its own
forward. The attention's fused forward repeats transformers' LlamaAttention.forward step for step
(projections, rotary, the cache update, the configured attention function, o_proj) with the fused
ops in place of its parts; Qwen2's differs from it only by passing its sliding window. The change
is made on the backend's own copy (never a caller's model) by instance attributes, as `packed.py`
does. Used by `hf.py`.
"""

from __future__ import annotations

import functools
import importlib
import logging

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from . import kernel, packed

log = logging.getLogger(__name__)

NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm")
MLPS = ("LlamaMLP", "Qwen2MLP")
ATTENTIONS = ("LlamaAttention", "Qwen2Attention")
SILU = ("SiLU", "SiLUActivation")  # torch's and transformers' (whose forward is F.silu)


def _norm(ops, weight: torch.Tensor, eps: float, hidden_states: torch.Tensor) -> torch.Tensor:
    return ops.rms_norm(hidden_states.contiguous(), weight, eps)


def _mlp(ops, gate_up, down, x: torch.Tensor) -> torch.Tensor:
    return down(ops.silu_mul(gate_up(x)))


def _attention(module, ops, qkv, eager, hidden_states, position_embeddings, attention_mask,
               past_key_values=None, **kwargs):
    shape = hidden_states.shape[:-1]
    heads, kv_heads, head_dim = module.config.num_attention_heads, module.config.num_key_value_heads, module.head_dim
    x = qkv(hidden_states)
    cos, sin = position_embeddings
    q, k = ops.rotary(x, cos.contiguous(), sin.contiguous(), heads, kv_heads)
    q = q.view(*shape, heads, head_dim).transpose(1, 2)
    k = k.view(*shape, kv_heads, head_dim).transpose(1, 2)
    v = x[..., (heads + kv_heads) * head_dim:].view(*shape, kv_heads, head_dim).transpose(1, 2)
    if past_key_values is not None:
        k, v = past_key_values.update(k, v, module.layer_idx)
    attend = ALL_ATTENTION_FUNCTIONS.get_interface(module.config._attn_implementation, eager)
    if hasattr(module, "sliding_window"):  # Qwen2
        kwargs["sliding_window"] = module.sliding_window
    out, weights = attend(module, q, k, v, attention_mask, dropout=0.0, scaling=module.scaling, **kwargs)
    return module.o_proj(out.reshape(*shape, -1).contiguous()), weights


def _plain(*linears) -> bool:
    return all(type(m) is nn.Linear for m in linears)


def _unpack(*linears) -> None:
    """Back to nn.Linear's own forward (unused now): their packed weights are freed."""
    for m in linears:
        m.__dict__.pop("forward", None)


def fuse(model) -> int:
    """Fuse the known layers of `model` (the backend's own copy, its linears packed); returns how
    many modules now run fused forwards (0: the model is unchanged)."""
    ops = kernel.ops()
    if (ops is None or model.device.type != "cpu" or model.dtype not in packed.DTYPES
            or not packed._kernel_ok(model.dtype)):  # its fused projections are packed linears
        return 0
    fused = 0
    with torch.no_grad():
        for m in model.modules():
            name = type(m).__name__
            if name in NORMS and getattr(m, "weight", None) is not None and m.weight.dtype == model.dtype:
                m.forward = functools.partial(_norm, ops, m.weight.detach(), float(m.variance_epsilon))
            elif (name in MLPS and _plain(m.gate_proj, m.up_proj, m.down_proj) and type(m.act_fn).__name__ in SILU
                  and m.gate_proj.bias is None and m.up_proj.bias is None):
                gate_up = packed.linear(torch.cat([m.gate_proj.weight, m.up_proj.weight]))
                m.forward = functools.partial(_mlp, ops, gate_up, m.down_proj)
                _unpack(m.gate_proj, m.up_proj)
            elif (name in ATTENTIONS and _plain(m.q_proj, m.k_proj, m.v_proj)
                  and not hasattr(m, "q_norm") and len({p.bias is None for p in (m.q_proj, m.k_proj, m.v_proj)}) == 1):
                projections = (m.q_proj, m.k_proj, m.v_proj)
                bias = None if m.q_proj.bias is None else torch.cat([p.bias for p in projections])
                qkv = packed.linear(torch.cat([p.weight for p in projections]), bias)
                eager = importlib.import_module(type(m).__module__).eager_attention_forward
                m.forward = functools.partial(_attention, m, ops, qkv, eager)
                _unpack(*projections)
            else:
                continue
            fused += 1
    if fused:
        log.info("fused %d modules for sampling (rms_norm, qkv + rotary, gate_up + silu_mul)", fused)
    return fused
