"""A slot KV cache for the hf backend's continuous batching, plugged into transformers through its
documented `AttentionInterface` (https://huggingface.co/docs/transformers/en/attention_interface).

Why not DynamicCache: it concatenates every layer's keys and values at every step (a copy of the
whole cache per token) and needs left padding, so finished rows keep costing until the batch ends.
Here the cache is preallocated and written in place, in two parts per layer:
- prompt slots [prompt_slots, kv_heads, prompt_len, head_dim]: each prompt's keys/values, written
  once at prefill and shared by its n samples (never copied n times, and read once per step for
  all n: the n rows' queries attend to it together, as extra query positions);
- row slots [slots, kv_heads, gen_len, head_dim]: each row's generated tokens, written at the
  row's own position; active rows always occupy slots 0..B-1 (a finished one is replaced by the
  last), so attention reads a view, never a copy.
A decode step on CPU runs one fused op over both parts (`kernel.py`, `decode_attention.cpp`): per
row one softmax over its prompt slot and its own tokens, each row read only up to its own length, a
prompt's rows one after another so its keys/values come from cache for all but the first. Elsewhere
(CUDA, head sizes it does not take, `decode_attention="flash"`) it attends to the two parts
separately through PyTorch's flash kernel and merges them by their log-sum-exp (exactly the softmax
over the concatenation, as in split-KV / flash-decoding).
A call whose prompts all begin with the same tokens (few-shot worked examples, a long system turn;
the engine does it from 64 tokens on) keeps that common prefix once, in a third part
[1, kv_heads, common_len, head_dim]: it is prefilled once, every prompt slot holds only the rest of
its prompt, and a decode step reads it once for all rows (every row's queries as query positions of
one sequence), merged like the other two (vLLM's cascade attention, on a CPU).

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

from . import kernel

NAME = "mathpo_slots"


class Unsupported(RuntimeError):
    """The model's attention needs something the slot cache does not do (sliding window, softcap...)."""


class SlotCache:
    def __init__(self, layers: int, slots: int, kv_heads: int, prompt_len: int, gen_len: int, head_dim: int,
                 n: int, dtype, device, common_len: int = 0, group: int = 1, fused: bool = True):
        # zeros, not empty: masked positions still enter attention as 0 * value, and 0 * NaN is NaN
        def part(count, length):
            return [torch.zeros((count, kv_heads, length, head_dim), dtype=dtype, device=device)
                    for _ in range(layers)]
        self.prompt_keys, self.prompt_values = part(slots, prompt_len), part(slots, prompt_len)
        self.keys, self.values = part(slots, gen_len), part(slots, gen_len)
        # every prompt's first common_len tokens (the prompt slots hold what follows them)
        self.common_len = common_len
        self.common_keys, self.common_values = (part(1, common_len), part(1, common_len)) if common_len else ([], [])
        self.n, self.gen_len, self.kv_heads = n, gen_len, kv_heads
        self.length = common_len + prompt_len + gen_len  # the longest sequence a row can reach
        self.dtype, self.device = dtype, device
        # Decode through the fused op (kernel.py) where it is built and takes these shapes; else flash.
        self.fused = (fused and torch.device(device).type == "cpu"
                      and dtype in (torch.float32, torch.bfloat16, torch.float16)
                      and head_dim % 32 == 0 and head_dim <= 128 and group <= 16 and kernel.op() is not None)
        # What the next forward does; set by the engine before each call.
        self.mode = "decode"  # or "prefill", or "common" (the common prefix's own prefill)
        # prefill: prompts packed in one sequence; per prompt (start, end, prompt slot)
        self.segments: list[tuple[int, int, int]] = []
        # decode, for B active rows over the prompt slots 0..P-1; the fused op's:
        self.own_len: torch.Tensor | None = None  # [B] each row's own tokens, the new one included
        self.prompt_len: torch.Tensor | None = None  # [P]
        self.order: torch.Tensor | None = None  # [B] rows grouped by prompt slot
        self.starts: torch.Tensor | None = None  # [P + 1] slot p's rows at order[starts[p]:starts[p + 1]]
        # the flash path's:
        self.write: torch.Tensor | None = None  # [B * kv_heads] flat index of each row's new key/value
        self.cells: torch.Tensor | None = None  # [B * kv_heads] each row's query cells in the prompt grid
        self.prompts = 0  # P
        self.gen_mask: torch.Tensor | None = None  # [B, 1, 1, Wg] additive: 0 where a row may attend
        self.prompt_mask: torch.Tensor | None = None  # [P, 1, 1, Wp]

    @staticmethod
    def bytes_per_slot(config, length: int, dtype) -> int:
        """One row's share: its prompt slot (at most one per row) and its generated tokens."""
        layers, kv_heads, head_dim = dims(config)
        return 2 * layers * kv_heads * length * head_dim * torch.empty((), dtype=dtype).element_size()

    def _mask(self, lengths: list[int]) -> torch.Tensor:
        lengths = torch.tensor(lengths, device=self.device)
        cols = torch.arange(int(lengths.max()), device=self.device)
        # additive, in the cache's dtype: what the CPU flash kernel takes
        mask = torch.zeros((len(lengths), 1, 1, len(cols)), dtype=self.dtype, device=self.device)
        return mask.masked_fill_((cols[None, :] >= lengths[:, None])[:, None, None, :], float("-inf"))

    def prepare_decode(self, gen_pos: list[int], slots: list[int], samples: list[int],
                       prompt_lens: list[int]) -> None:
        """Per active row: where it writes its new token, its prompt slot and sample index;
        prompt_lens: of prompt slots 0..P-1."""
        self.mode = "decode"
        self.prompts = len(prompt_lens)
        pos = torch.tensor(gen_pos, device=self.device)
        slot = torch.tensor(slots, device=self.device)
        if self.fused:  # the op writes at and reads up to each row's own length; no masks
            self.own_len = pos + 1
            self.prompt_len = torch.tensor(prompt_lens, device=self.device)
            self.order = torch.argsort(slot, stable=True)  # rows grouped by prompt slot
            self.starts = torch.zeros(self.prompts + 1, dtype=torch.long, device=self.device)
            self.starts[1:] = torch.bincount(slot, minlength=self.prompts).cumsum(0)
            return
        heads = torch.arange(self.kv_heads, device=self.device)
        base = torch.arange(len(gen_pos), device=self.device)[:, None] * self.kv_heads + heads[None, :]
        self.write = (base * self.gen_len + pos[:, None]).reshape(-1)
        # row b, kv head h -> grid cell (slot * kv_heads + h) * n + sample
        sample = torch.tensor(samples, device=self.device)[:, None]
        self.cells = ((slot[:, None] * self.kv_heads + heads[None, :]) * self.n + sample).reshape(-1)
        self.gen_mask = self._mask([p + 1 for p in gen_pos])
        self.prompt_mask = self._mask(prompt_lens)

    def prepare_prefill(self, segments: list[tuple[int, int, int]]) -> None:
        self.mode, self.segments = "prefill", segments

    def prepare_common(self) -> None:
        """The next forward is the common prefix alone (batch 1, positions 0..common_len-1)."""
        self.mode = "common"

    def move(self, src: int, dst: int, upto: int) -> None:
        """Copy row slot src's first `upto` positions into row slot dst (compaction after a row finishes)."""
        for k, v in zip(self.keys, self.values):
            k[dst, :, :upto] = k[src, :, :upto]
            v[dst, :, :upto] = v[src, :, :upto]


def dims(config) -> tuple[int, int, int]:
    """(layers, kv heads, head_dim) of a model config."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim


def query_group(config) -> int:
    """Query heads per kv head."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return text.num_attention_heads // dims(config)[1]


def _attend(query, key, value, mask, scale):
    """Attention output and its log-sum-exp per query (the merge needs it; F.sdpa does not return it)."""
    if query.device.type == "cpu":
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, attn_mask=mask,
                                                                          scale=scale)
    scores = (query.float() @ key.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + mask.float()
    lse = scores.logsumexp(-1)
    return ((scores - lse[..., None]).exp() @ value.float()).to(query.dtype), lse


def _common(cache: SlotCache, layer: int, query, key, value, scaling):
    """The common prefix (batch 1): causal attention, its keys/values kept for every prompt."""
    cache.common_keys[layer][0] = key[0]
    cache.common_values[layer][0] = value[0]
    out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                         enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2), None


def _prefill(cache: SlotCache, layer: int, query, key, value, scaling):
    """Packed prompts (batch 1): causal attention within each (after the common prefix, which every
    prompt sees whole), its keys/values into its prompt slot."""
    K, V = cache.prompt_keys[layer], cache.prompt_values[layer]
    common = cache.common_len
    outs = []
    for start, end, slot in cache.segments:
        k, v = key[:, :, start:end], value[:, :, start:end]
        K[slot, :, :end - start] = k[0]
        V[slot, :, :end - start] = v[0]
        mask = None
        if common:  # one softmax over [common prefix | own tokens]: the prefix whole, the rest causal
            k = torch.cat([cache.common_keys[layer], k], dim=2)
            v = torch.cat([cache.common_values[layer], v], dim=2)
            mask = torch.ones(end - start, common + end - start, dtype=torch.bool,
                              device=query.device).tril(diagonal=common)
        outs.append(F.scaled_dot_product_attention(query[:, :, start:end], k, v, attn_mask=mask,
                                                   is_causal=mask is None, scale=scaling,
                                                   enable_gqa=key.shape[1] != query.shape[1]))
    return torch.cat(outs, dim=2).transpose(1, 2), None


def _decode(cache: SlotCache, layer: int, query, key, value, scaling):
    """One new token per active row: attention over its own tokens and, shared with its prompt's other
    samples, over the prompt (the fused op, else flash and a merge), then the common prefix merged in."""
    batch, heads, _, head_dim = query.shape
    kv = key.shape[1]
    group = heads // kv
    K, V = cache.keys[layer], cache.values[layer]
    # Grouped-query attention without repeating keys: the query heads sharing a kv head become
    # that head's "query positions" (the same trick as transformers' pack_gqa).
    q = query.reshape(batch, kv, group, head_dim)
    if cache.fused:  # the op writes the new keys/values itself
        out, lse = kernel.op()(q.contiguous(), key.contiguous(), value.contiguous(), K, V, cache.own_len,
                               cache.prompt_keys[layer], cache.prompt_values[layer], cache.prompt_len,
                               cache.order, cache.starts, scaling)
    else:
        # index_copy_ on a flat view: advanced-index assignment (K[rows, :, pos] = ...) is far slower on CPU
        K.view(-1, head_dim).index_copy_(0, cache.write, key.reshape(batch * kv, head_dim))
        V.view(-1, head_dim).index_copy_(0, cache.write, value.reshape(batch * kv, head_dim))
        out, lse = _decode_flash(cache, layer, q, scaling)
    if cache.common_len:
        # every row's queries as the query positions of one sequence over the common prefix
        rows = q.transpose(0, 1).reshape(1, kv, batch * group, head_dim)
        common, common_lse = _attend(rows, cache.common_keys[layer], cache.common_values[layer], None, scaling)
        common = common.reshape(kv, batch, group, head_dim).transpose(0, 1)
        common_lse = common_lse.reshape(kv, batch, group).transpose(0, 1)
        out = torch.lerp(out, common, torch.sigmoid(common_lse - lse).to(out.dtype)[..., None])
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2), None


def _decode_flash(cache: SlotCache, layer: int, q, scaling):
    """Rows' own part and their prompts' part through PyTorch's flash kernel, merged: (out, lse)."""
    batch, kv, group, head_dim = q.shape
    n, prompts = cache.n, cache.prompts
    K, V = cache.keys[layer], cache.values[layer]
    width = cache.gen_mask.shape[-1]
    own, own_lse = _attend(q, K[:batch, :, :width], V[:batch, :, :width], cache.gen_mask, scaling)
    # The prompt part: each prompt's n sample cells stacked as query positions of its slot (a grid
    # [P, kv, n * group, head_dim] filled by one index_copy_); cells of finished samples hold zeros
    # and their outputs are dropped.
    grid = q.new_zeros((prompts * kv * n, group, head_dim)).index_copy_(0, cache.cells, q.reshape(-1, group, head_dim))
    width = cache.prompt_mask.shape[-1]
    shared, shared_lse = _attend(grid.view(prompts, kv, n * group, head_dim),
                                 cache.prompt_keys[layer][:prompts, :, :width],
                                 cache.prompt_values[layer][:prompts, :, :width], cache.prompt_mask, scaling)
    shared = shared.reshape(-1, group, head_dim).index_select(0, cache.cells).view(batch, kv, group, head_dim)
    shared_lse = shared_lse.reshape(-1, group).index_select(0, cache.cells).view(batch, kv, group)
    weight = torch.sigmoid(shared_lse - own_lse).to(own.dtype)[..., None]  # the prompt part's softmax mass
    return torch.lerp(own, shared, weight), torch.logaddexp(own_lse, shared_lse)


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    cache: SlotCache | None = kwargs.pop("mathpo_kv", None)
    if cache is None:  # an ordinary forward while the engine's attention is set: behave as sdpa
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    window = kwargs.get("sliding_window")
    if (window and window < cache.length) or kwargs.get("softcap") or kwargs.get("s_aux") is not None:
        raise Unsupported("sliding-window / softcap / sink attention")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    step = {"prefill": _prefill, "common": _common, "decode": _decode}[cache.mode]
    return step(cache, module.layer_idx, query, key, value, scaling)


AttentionInterface.register(NAME, slot_attention)
# Ordinary forwards under this name get sdpa's masks (the engine's own calls ignore them).
AttentionMaskInterface.register(NAME, sdpa_mask)
