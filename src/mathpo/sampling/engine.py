"""Continuous batching for the hf backend: a scheduler over the model's own forward and a slot KV cache.

Each (prompt, sample) is a row. A prompt is prefilled once into a prompt slot whose keys/values its
n samples share (never re-encoded or copied n times), and a head common to all of a call's prompts
(few-shot examples) is prefilled and attended once for all of them. Every step feeds one token per
active row; a row that ends (EOS, stop string, length) leaves at once and its slot is refilled with
the next prompt, so no step is spent on padding or on finished rows. Per row, the calculator forces
`result>>` after `<<expr=`, stop strings are checked on its decoded tail (pieces decoded once per
token id and cached), and its random draws come from its own stream (`sampler.py`).
Used by `hf.py` (`mathpo sample`, `eval`, the pairs stage's prefix sampling).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from . import Completion, SamplingParams, calculator, sampler, truncate_at_stop
from .slots import NAME, SlotCache, dims, query_group

TAIL_CHARS = 2 * calculator.MAX_CHARS  # enough text kept per row to see a whole `<<expr=` annotation
PREFILL_TOKENS = 2048  # prompt tokens packed into one prefill forward at most
# A prefix common to all of a call's prompts is kept once from this many tokens on; below it the
# extra attention call per layer and step costs about what it saves (a micro-benchmark of a decode
# step: 48 tokens level, 96 tokens 3-6% faster; the prefill saved comes on top).
MIN_COMMON = 64


@dataclass
class Row:
    prompt: int
    sample: int
    key: int
    slot: int  # its prompt's slot in the cache (shared with the prompt's other samples)
    pos: int  # the position of the next token fed: prompt + generated - 1 (its keys/values go to generated - 1)
    calc_tail: str  # the end of prompt + completion, for the calculator
    ids: list[int] = field(default_factory=list)
    stop_tail: str = ""  # the end of the completion only, for stop strings
    forced: list[int] = field(default_factory=list)
    finish: str | None = None


@dataclass
class _Call:
    """One `stream` call's state (kept off the engine, which outlives calls)."""
    params: SamplingParams
    cache: SlotCache
    stop_keep: int  # completion characters kept per row to find a stop string in
    free: list[int]  # prompt slots free (a heap: the lowest first keeps the attended slots few)
    common: int = 0  # tokens every prompt begins with, kept once in the cache (prompt slots hold the rest)
    live: dict[int, int] = field(default_factory=dict)  # prompt slot -> its rows still active
    prompt_lens: list[int] = field(default_factory=list)  # per prompt slot


class BatchEngine:
    def __init__(self, model, tokenizer, max_slots: int, kv_bytes: int, fused: bool = True):
        self.model, self.tok = model, tokenizer
        self.fused = fused  # decode attention through the fused CPU op where it applies (slots.py)
        self.max_slots, self.kv_bytes = max_slots, kv_bytes
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        self.eos = {t for t in [*eos, tokenizer.eos_token_id] if t is not None}
        self.group = query_group(model.config)
        self._pieces: dict[int, str] = {}  # token id -> its text alone (kept across calls)
        self._forced: dict[str, list[int]] = {}  # text to force -> its tokens
        # Streams open on the model: its attention is the slot cache's from the first one's start to
        # the last one's end (calls may interleave: the pairs stage's rollouts, a caller's generators).
        self._open, self._previous = 0, None

    def slots_for(self, rows: int, length: int, n: int) -> int:
        per_slot = SlotCache.bytes_per_slot(self.model.config, length, self.model.dtype)
        return max(n, min(self.max_slots, rows, self.kv_bytes // per_slot))

    def stream(self, prompt_ids: list[list[int]], prompts: list[str],
               params: SamplingParams) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (prompt index, its n completions) as each prompt's last sample finishes."""
        if not prompts:
            return
        if not self._open:
            self._previous = self.model.config._attn_implementation
            self.model.set_attn_implementation(NAME)
        self._open += 1
        try:
            yield from self._stream(prompt_ids, prompts, params)
        finally:
            self._open -= 1
            if not self._open:
                self.model.set_attn_implementation(self._previous)

    def _stream(self, prompt_ids, prompts, params):
        n = params.n
        common = common_prefix(prompt_ids)
        prompt_len = max(len(p) for p in prompt_ids) - common
        slots = self.slots_for(len(prompts) * n, prompt_len + params.max_new_tokens, n)
        layers, kv_heads, head_dim = dims(self.model.config)
        cache = SlotCache(layers, slots, kv_heads, prompt_len, params.max_new_tokens, head_dim, n,
                          self.model.dtype, self.model.device, common_len=common, group=self.group,
                          fused=self.fused)
        call = _Call(params, cache, max((len(s) for s in params.stop), default=0) + 8, list(range(slots)),
                     common, prompt_lens=[1] * slots)
        if common:
            with torch.inference_mode():
                cache.prepare_common()
                self._forward(call, torch.tensor([prompt_ids[0][:common]]),
                              torch.arange(common, device=self.model.device)[None])
        done: dict[int, list[Completion | None]] = {}
        active: list[Row] = []
        # Similar lengths side by side: attention spans the longest active row.
        queue = deque(sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i])))
        while queue or active:
            with torch.inference_mode():
                free = slots - len(active)
                # Refill in groups (one packed prefill each) once enough slots are free, or when idle.
                if queue and free >= n and (free >= self.refill_at(slots, n) or not active):
                    group = [queue.popleft()]
                    tokens = len(prompt_ids[group[0]]) - common
                    while (queue and n * (len(group) + 1) <= free
                           and tokens + len(prompt_ids[queue[0]]) - common <= PREFILL_TOKENS):
                        tokens += len(prompt_ids[queue[0]]) - common
                        group.append(queue.popleft())
                    active.extend(self._admit(call, group, [prompt_ids[i] for i in group],
                                              [prompts[i] for i in group]))
                if not any(r.finish for r in active):
                    self._step(call, active)
                finished = self._retire(call, active, done)
            for i in finished:
                yield i, done.pop(i)

    def _retire(self, call: _Call, active: list[Row], done: dict) -> list[int]:
        """Drop finished rows (the last active row moves into each gap); return prompts now complete."""
        finished = []
        for s in range(len(active) - 1, -1, -1):
            row = active[s]
            if not row.finish:
                continue
            mine = done.setdefault(row.prompt, [None] * call.params.n)
            mine[row.sample] = self._completion(call, row)
            call.live[row.slot] -= 1
            if not call.live[row.slot]:
                del call.live[row.slot]
                heapq.heappush(call.free, row.slot)
            last = active.pop()
            if s < len(active):
                call.cache.move(len(active), s, len(last.ids))
                active[s] = last
            if all(c is not None for c in mine):
                finished.append(row.prompt)
        return finished

    def _forward(self, call: _Call, input_ids: torch.Tensor, position_ids: torch.Tensor, keep=1) -> torch.Tensor:
        """Logits (in the model's dtype: the sampler widens them, or reads them as they are) at the
        positions `keep` (1: the last)."""
        out = self.model(input_ids=input_ids.to(self.model.device), position_ids=position_ids, use_cache=False,
                         logits_to_keep=keep, mathpo_kv=call.cache)
        return out.logits[:, -1] if isinstance(keep, int) else out.logits

    @staticmethod
    def refill_at(slots: int, n: int) -> int:
        return max(n, slots // 8)

    def _admit(self, call: _Call, group: list[int], ids: list[list[int]], texts: list[str]) -> list[Row]:
        """Prefill the group's prompts once, packed into one sequence (no padding), each into a prompt
        slot its n samples share, and pick every sample's first token."""
        p, segments, start, rows = call.params, [], 0, []
        ids = [tokens[call.common:] for tokens in ids]  # the common prefix is in the cache already
        for i, tokens, text in zip(group, ids, texts):
            slot = heapq.heappop(call.free)
            call.live[slot], call.prompt_lens[slot] = p.n, len(tokens)
            segments.append((start, start + len(tokens), slot))
            start += len(tokens)
            rows += [Row(i, k, sampler.row_key(p.seed, text, k), slot, call.common + len(tokens),
                         text[-TAIL_CHARS:]) for k in range(p.n)]
        call.cache.prepare_prefill(segments)
        positions = torch.cat([torch.arange(call.common, call.common + len(t)) for t in ids])[None]
        positions = positions.to(self.model.device)
        last = torch.tensor([end - 1 for _, end, _ in segments], device=self.model.device)
        logits = self._forward(call, torch.tensor([[t for tokens in ids for t in tokens]]), positions, last)[0]
        if p.calculator:  # a prefix may end inside an annotation (`... <<2+3=`)
            for r in rows:
                r.forced = self._force_tokens(r.calc_tail)
        draws = [sampler.uniform(r.key, 0) for r in rows]
        picks = sampler.choose(logits.repeat_interleave(p.n, dim=0), p.temperature, p.top_p, draws).tolist()
        for r, t in zip(rows, picks):
            self._append(call, r, t)
        return rows

    def _step(self, call: _Call, active: list[Row]) -> None:
        p = call.params
        prompts = max(r.slot for r in active) + 1
        call.cache.prepare_decode([len(r.ids) - 1 for r in active], [r.slot for r in active],
                                  [r.sample for r in active], call.prompt_lens[:prompts])
        positions = torch.tensor([[r.pos] for r in active], device=self.model.device)
        logits = self._forward(call, torch.tensor([[r.ids[-1]] for r in active]), positions)
        draws = [sampler.uniform(r.key, len(r.ids)) for r in active]
        for r, t in zip(active, sampler.choose(logits, p.temperature, p.top_p, draws).tolist()):
            r.pos += 1
            self._append(call, r, t)

    def _piece(self, t: int) -> str:
        piece = self._pieces.get(t)
        if piece is None:
            piece = self._pieces[t] = self.tok.decode([t], skip_special_tokens=True)
        return piece

    def _force_tokens(self, text: str) -> list[int]:
        rest = calculator.pending(text)
        if not rest:
            return []
        if rest not in self._forced:
            self._forced[rest] = self.tok(rest, add_special_tokens=False).input_ids
        return list(self._forced[rest])

    def _append(self, call: _Call, r: Row, sampled: int) -> None:
        """Add one token to row r (the calculator's, if one is due) and decide whether r is done."""
        p = call.params
        t = r.forced.pop(0) if r.forced else sampled
        r.ids.append(t)
        piece = self._piece(t)
        if p.calculator:
            r.calc_tail = (r.calc_tail + piece)[-TAIL_CHARS:]
            if not r.forced and "=" in piece:
                r.forced = self._force_tokens(r.calc_tail)
        if t in self.eos:
            r.finish = "stop"
        elif p.stop:
            r.stop_tail = (r.stop_tail + piece)[-call.stop_keep:]
            if any(s in r.stop_tail for s in p.stop):
                r.finish = "stop"
        if r.finish is None and len(r.ids) >= p.max_new_tokens:
            r.finish = "length"

    def _completion(self, call: _Call, r: Row) -> Completion:
        stop = call.params.stop
        text, stopped = truncate_at_stop(self.tok.decode(r.ids, skip_special_tokens=True), stop)
        return Completion(text, len(r.ids), "stop" if stopped or r.finish == "stop" else "length")


def common_prefix(prompt_ids: list[list[int]]) -> int:
    """Tokens every prompt begins with, if at least MIN_COMMON (else 0), leaving each prompt at least
    one token of its own (its prefill gives the first sample's logits). One prompt alone: 0 (its n
    samples share it already)."""
    if len(prompt_ids) < 2:
        return 0
    first, limit = prompt_ids[0], min(len(p) for p in prompt_ids) - 1
    common = 0
    while common < limit and all(p[common] == first[common] for p in prompt_ids):
        common += 1
    return common if common >= MIN_COMMON else 0
