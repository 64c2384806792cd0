"""Where the hf engine's decode time goes, and how close its attention runs to this machine's memory
bandwidth: the engine's attention (slot KV cache, `mathpo/sampling/slots.py`) timed inside a real
sampling call, its bytes of keys/values read per second set side by side with a plain tensor copy
of the same size (the floor any KV-cache attention shares), and the ratio printed.

    python bench/decode_split.py                         # 32 GSM8K questions x 4, 256 new tokens
    python bench/decode_split.py --fewshot 2 --questions 16

Same workload as `bench/sampling.py`'s mathpo run (chat-boxed template, temperature 0.7, seed 0,
the backend's defaults). The engine's decode and prefill attention functions are wrapped with timers
for the length of the call and restored after. Bytes per decode call: each active row's own
keys/values (rows x kv heads x width x head_dim x 2 x element size) plus its prompts' shared ones
and, once, the head common to all prompts where there is one (`--fewshot`).
The copy floor: `torch.Tensor.copy_` of a buffer the size of the whole KV cache read per step
(reads + writes counted, as the memory system sees them). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import torch

from mathpo import data, models, prompts
from mathpo.sampling import DECODE_ATTENTION, SamplingParams, slots
from mathpo.sampling.hf import HFBackend


def copy_bandwidth(nbytes: int, reps: int = 20) -> float:
    """GB/s of reads + writes for a plain copy of `nbytes` (bf16)."""
    x = torch.randn(max(1, nbytes // 2), dtype=torch.bfloat16)
    y = torch.empty_like(x)
    y.copy_(x)
    t = time.perf_counter()
    for _ in range(reps):
        y.copy_(x)
    return 2 * x.numel() * 2 * reps / (time.perf_counter() - t) / 1e9


def timed_attention(backend, texts, params):
    """Run one sampling call with the slot attention's steps timed; returns (wall s, tokens, stats)."""
    seconds, calls, read = Counter(), Counter(), Counter()
    originals = {"decode": slots._decode, "prefill": slots._prefill, "common": slots._common}

    def wrap(kind):
        def timed(cache, layer, query, key, value, scaling):
            t = time.perf_counter()
            out = originals[kind](cache, layer, query, key, value, scaling)
            seconds[kind] += time.perf_counter() - t
            calls[kind] += 1
            if kind == "decode":
                item = key.element_size() * 2 * key.shape[1] * key.shape[-1]  # K and V, per position
                if cache.fused:  # each row up to its own length, each prompt slot in use once
                    positions = int(cache.own_len.sum()) + int(cache.prompt_len[cache.starts.diff() > 0].sum())
                else:  # every row and prompt slot up to the longest (the flash kernel's masked width)
                    positions = query.shape[0] * cache.gen_mask.shape[-1] + cache.prompts * cache.prompt_mask.shape[-1]
                read[kind] += item * (positions + cache.common_len)
            return out
        return timed

    forward = backend.model.forward
    model_s = Counter()

    def timed_forward(*a, **k):
        t = time.perf_counter()
        out = forward(*a, **k)
        model_s["forward"] += time.perf_counter() - t
        return out

    slots._decode, slots._prefill, slots._common = wrap("decode"), wrap("prefill"), wrap("common")
    backend.model.forward = timed_forward
    try:
        t = time.perf_counter()
        results = backend.generate(texts, params)
        wall = time.perf_counter() - t
    finally:
        slots._decode, slots._prefill, slots._common = originals["decode"], originals["prefill"], originals["common"]
        del backend.model.forward  # back to the class's method
    tokens = sum(c.tokens for comps in results for c in comps)
    return wall, tokens, {"seconds": dict(seconds), "calls": dict(calls), "bytes": dict(read),
                          "forward_s": model_s["forward"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--fewshot", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-attention", default="fused", choices=DECODE_ATTENTION,
                    help="the hf backend's decode attention on CPU (mathpo's fused op or PyTorch's flash)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = models.load(args.model, quiet=True)
    tok = loaded.tokenizer
    records = data.load("gsm8k", "test", args.questions, args.data_dir)
    shots = data.load("gsm8k", "train", args.fewshot, args.data_dir) if args.fewshot else []
    texts = [prompts.render(tok, r["question"], fewshot=shots) for r in records]
    backend = HFBackend(loaded.model, tok, decode_attention=args.decode_attention)
    backend.generate(["Hello"], SamplingParams(max_new_tokens=4))  # warm-up
    params = SamplingParams(n=args.n, temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    wall, tokens, st = timed_attention(backend, texts, params)
    decode_s, calls = st["seconds"].get("decode", 0.0), st["calls"].get("decode", 1)
    prefill_s = st["seconds"].get("prefill", 0.0) + st["seconds"].get("common", 0.0)  # common: the shared head
    attn_gbs = st["bytes"].get("decode", 0) / decode_s / 1e9 if decode_s else 0.0
    per_step = st["bytes"].get("decode", 0) / max(1, calls) * loaded.model.config.num_hidden_layers
    floor = copy_bandwidth(int(per_step))
    out = {"bench": "decode_split", "model": args.model, "questions": len(texts), "n": args.n,
           "fewshot": args.fewshot, "decode_attention": args.decode_attention,
           "max_new_tokens": args.max_new_tokens, "threads": args.threads,
           "batch_size": backend.batch_size, "tokens": tokens, "seconds": round(wall, 2),
           "tokens_per_s": round(tokens / wall, 1), "forward_s": round(st["forward_s"], 2),
           "attention_decode_s": round(decode_s, 2), "attention_prefill_s": round(prefill_s, 2),
           "attention_share_of_wall": round(decode_s / wall, 3),
           "kv_read_per_step_mb": round(per_step / 1e6, 1),
           "attention_kv_gb_per_s": round(attn_gbs, 1), "copy_gb_per_s": round(floor, 1),
           "attention_vs_copy": round(attn_gbs / floor, 2) if floor else None}
    print(f"{tokens} tokens in {wall:.1f} s ({tokens / wall:.1f} tok/s); model forward {st['forward_s']:.1f} s, "
          f"of it decode attention {decode_s:.1f} s ({100 * decode_s / wall:.0f}% of wall), prefill attention "
          f"{out['attention_prefill_s']} s")
    print(f"decode attention reads {attn_gbs:.1f} GB/s of keys/values ({out['kv_read_per_step_mb']} MB a step); "
          f"a plain copy of that size moves {floor:.1f} GB/s: attention at {out['attention_vs_copy']}x the copy")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
