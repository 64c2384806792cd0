"""The transformers backend for `mathpo sample` / `eval`: batched `generate` over length-sorted
prompts (first version; the sampling issue makes it continuous-batched and adds the calculator).
"""

from __future__ import annotations

from typing import Callable

import torch

from . import Completion, SamplingParams, truncate_at_stop


class HFBackend:
    name = "hf"

    def __init__(self, model, tokenizer, add_special_tokens: bool = False, batch_size: int = 32):
        self.model, self.tok = model, tokenizer
        self.add_special_tokens = add_special_tokens
        self.batch_size = batch_size
        self.tok.padding_side = "left"

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams,
                 progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
        enc = [self.tok(p, add_special_tokens=self.add_special_tokens).input_ids for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(enc[i]))
        out: list[list[Completion]] = [[] for _ in prompts]
        per_batch = max(1, self.batch_size // params.n)
        torch.manual_seed(params.seed)
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            batch = self.tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            sample = params.temperature > 0
            seqs = self.model.generate(
                **batch, max_new_tokens=params.max_new_tokens, do_sample=sample,
                temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                top_k=None, num_return_sequences=params.n, pad_token_id=self.tok.pad_token_id,
                stop_strings=list(params.stop) or None, tokenizer=self.tok if params.stop else None,
            )
            new = seqs[:, batch["input_ids"].shape[1]:]
            for j, row in enumerate(new):
                ids = row.tolist()
                eos = self.tok.eos_token_id
                n_tok = ids.index(eos) + 1 if eos in ids else len([t for t in ids if t != self.tok.pad_token_id])
                text = self.tok.decode(ids[:n_tok], skip_special_tokens=True)
                text, stopped = truncate_at_stop(text, params.stop)
                finish = "stop" if stopped or eos in ids else "length"
                out[idx[j // params.n]].append(Completion(text, n_tok, finish))
            if progress:
                progress(len(idx))
        return out
