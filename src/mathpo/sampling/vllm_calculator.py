"""The calculator inside vLLM: a per-request logits processor (vLLM's v1 `AdapterLogitsProcessor`).

Once a row has written `<<expr=` (in its prompt or its completion), the tokens of `result>>` are
forced one per step, as `calculator.CalculatorLogitsProcessor` does for `generate`: each request
keeps its own decoded tail, so rows at different points of one batch are independent. Only requests
whose `extra_args` carry `mathpo_calculator` get one. vLLM builds this class inside its engine (a
worker process on CPU) from its qualified name, so it lives in a module of its own that imports
vLLM at the top. Used by `vllm.py` (`mathpo sample/eval --backend vllm --calculator`).
"""

from __future__ import annotations

import torch
from transformers import AutoTokenizer
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from . import calculator

ARG = "mathpo_calculator"
TAIL_CHARS = 2 * calculator.MAX_CHARS  # enough text to see a whole `<<expr=` annotation
PROMPT_TAIL_TOKENS = 128  # prompt tokens decoded for the tail (a prefix may end inside an annotation)


class _Request:
    """One request's calculator state; vLLM calls it before every sampling step."""

    def __init__(self, owner: CalculatorAdapter):
        self.owner = owner
        self.tail: str | None = None  # set from the prompt at the first call
        self.seen = 0  # output tokens already folded into the tail

    def __call__(self, prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
        o = self.owner
        if self.tail is None:
            self.tail = o.tok.decode(prompt_ids[-PROMPT_TAIL_TOKENS:], skip_special_tokens=True)
        if len(output_ids) > self.seen:
            self.tail += "".join(o.piece(t) for t in output_ids[self.seen:])
            self.seen = len(output_ids)
        self.tail = self.tail[-TAIL_CHARS:]
        forced = o.forcer.next_token(self.tail)
        if forced is not None:
            logits.fill_(float("-inf"))
            logits[forced] = 0.0
        return logits


class CalculatorAdapter(AdapterLogitsProcessor):
    def __init__(self, vllm_config, device, is_pin_memory):
        super().__init__(vllm_config, device, is_pin_memory)
        cfg = vllm_config.model_config
        self.tok = AutoTokenizer.from_pretrained(cfg.tokenizer, revision=cfg.tokenizer_revision)
        self.forcer = calculator.CalculatorLogitsProcessor(self.tok)  # the first token of what is pending
        self._pieces: dict[int, str] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy choices too

    def new_req_logits_processor(self, params):
        return _Request(self) if (params.extra_args or {}).get(ARG) else None

    def piece(self, t: int) -> str:
        if t not in self._pieces:
            self._pieces[t] = self.tok.decode([t], skip_special_tokens=True)
        return self._pieces[t]
