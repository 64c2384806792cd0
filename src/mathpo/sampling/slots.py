"""A slot KV cache for the hf backend's continuous batching, plugged into transformers through its
documented `AttentionInterface` (https://huggingface.co/docs/transformers/en/attention_interface).

Why not DynamicCache: it concatenates every layer's keys and values at every step (a copy of the
whole cache per token) and needs left padding, so finished rows keep costing until the batch ends.
Here each sequence owns one row ("slot") of a preallocated [slots, kv_heads, length, head_dim]
tensor per layer, written in place at the sequence's own position; active sequences always occupy
slots 0..B-1 (a finished one is replaced by the last), so attention reads a view, never a copy.

The model runs with `use_cache=False` and `mathpo_kv=<SlotCache>` in its forward kwargs, which
transformers hands to the registered attention function; the engine sets this attention only for
the length of a call. Used by `engine.py` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "mathpo_slots"


class Unsupported(RuntimeError):
    """The model's attention needs something the slot cache does not do (sliding window, softcap...)."""


class SlotCache:
    def __init__(self, layers: int, slots: int, kv_heads: int, length: int, head_dim: int, dtype, device):
        shape = (slots, kv_heads, length, head_dim)
        # zeros, not empty: masked positions still enter attention as 0 * value, and 0 * NaN is NaN
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = length
        # What the next forward does; set by the engine before each call.
        self.mode = "decode"  # or "prefill"
        # prefill: prompts packed in one sequence; per prompt (start, end, first slot, slots) -- its
        # tokens' span in the sequence and the slots that receive its keys/values
        self.segments: list[tuple[int, int, int, int]] = []
        self.positions: torch.Tensor | None = None  # decode: [B] position written by each active row
        self.rows: torch.Tensor | None = None  # decode: 0..B-1
        self.mask: torch.Tensor | None = None  # decode: [B, 1, 1, W] True where a row may attend

    @staticmethod
    def bytes_per_slot(config, length: int, dtype) -> int:
        layers, kv_heads, head_dim = dims(config)
        return 2 * layers * kv_heads * length * head_dim * torch.empty((), dtype=dtype).element_size()

    def prepare_decode(self, positions: torch.Tensor) -> None:
        self.mode, self.positions = "decode", positions
        self.rows = torch.arange(len(positions), device=positions.device)
        width = int(positions.max()) + 1
        cols = torch.arange(width, device=positions.device)
        self.mask = (cols[None, :] <= positions[:, None])[:, None, None, :]

    def prepare_prefill(self, segments: list[tuple[int, int, int, int]]) -> None:
        self.mode, self.segments = "prefill", segments

    def move(self, src: int, dst: int, upto: int) -> None:
        """Copy slot src's first `upto` positions into slot dst (compaction after a row finishes)."""
        for k, v in zip(self.keys, self.values):
            k[dst, :, :upto] = k[src, :, :upto]
            v[dst, :, :upto] = v[src, :, :upto]


def dims(config) -> tuple[int, int, int]:
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    cache: SlotCache | None = kwargs.pop("mathpo_kv", None)
    if cache is None:  # an ordinary forward while the engine's attention is set: behave as sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    window = kwargs.get("sliding_window")
    if (window and window < cache.length) or kwargs.get("softcap") or kwargs.get("s_aux") is not None:
        raise Unsupported("sliding-window / softcap / sink attention")
    layer = module.layer_idx
    K, V = cache.keys[layer], cache.values[layer]
    batch, heads, q_len, head_dim = query.shape
    kv_heads = key.shape[1]
    if cache.mode == "prefill":  # packed prompts (batch 1): causal attention within each, copied to its slots
        outs = []
        for start, end, first, count in cache.segments:
            k, v = key[:, :, start:end], value[:, :, start:end]
            K[first:first + count, :, :end - start] = k
            V[first:first + count, :, :end - start] = v
            outs.append(F.scaled_dot_product_attention(query[:, :, start:end], k, v, is_causal=True, scale=scaling,
                                                       enable_gqa=kv_heads != heads))
        return torch.cat(outs, dim=2).transpose(1, 2), None
    # decode: one new token per active row (slots 0..B-1), written at that row's own position
    K[cache.rows, :, cache.positions] = key[:, :, 0]
    V[cache.rows, :, cache.positions] = value[:, :, 0]
    width = cache.mask.shape[-1]
    # Grouped-query attention without repeating keys: the query heads sharing a kv head become
    # that head's "query positions" (the same trick as transformers' pack_gqa).
    q = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    out = F.scaled_dot_product_attention(q, K[:batch, :, :width], V[:batch, :, :width], attn_mask=cache.mask,
                                         scale=scaling)
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2), None


AttentionInterface.register(NAME, slot_attention)
# Ordinary forwards under this name get sdpa's masks (the engine's own calls ignore them).
AttentionMaskInterface.register(NAME, sdpa_mask)
