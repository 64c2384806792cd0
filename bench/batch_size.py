"""Rows decoded together: mathpo's hf backend at several `batch_size`s, side by side in one run, on
the demo's evaluation workload (greedy, calculator on, the plain gsm8k template, synthetic test
problems), with each size's tokens/s and its ratio to the first size.

    python bench/batch_size.py                                  # 256 problems; 32, 64, 128, 256 rows
    python bench/batch_size.py --model runs/demo/iter_0/warmup_sft/model --sizes 32,128

The embedded model as shipped answers these problems with long rambles, so the figures that chose
the CPU default (128) were taken with the demo's warm-up model (`--model`). Each size gets its own
backend (the KV budget, `--kv-gb`, may cap it lower: the run prints the slots it allows) and a short
warm-up call; tokens are generated tokens up to EOS, wall-clock. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from mathpo import models, prompts
from mathpo.data import synth
from mathpo.sampling import SamplingParams
from mathpo.sampling.hf import HFBackend


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--problems", type=int, default=256)
    ap.add_argument("--sizes", default="32,64,128,256")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--kv-gb", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = models.load(args.model, quiet=True)
    records = synth.generate(args.problems, (1, 4), seed=0, split="test")
    texts = [prompts.render(loaded.tokenizer, r["question"], "gsm8k") for r in records]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, calculator=True)
    result = {"bench": "batch_size", "model": args.model, "problems": len(texts), "threads": args.threads}
    first = None
    for size in [int(x) for x in args.sizes.split(",")]:
        backend = HFBackend(loaded.model, loaded.tokenizer, batch_size=size, kv_gb=args.kv_gb)
        backend.generate(texts[:4], SamplingParams(max_new_tokens=8))  # warm-up
        t0 = time.perf_counter()
        out = backend.generate(texts, params)
        wall = time.perf_counter() - t0
        tokens = sum(c.tokens for comps in out for c in comps)
        rate = tokens / wall
        first = first or rate
        longest = max(len(ids) for ids in backend.encode(texts)) + args.max_new_tokens
        slots = backend.engine.slots_for(len(texts), longest, 1) if backend.engine else None
        result[str(size)] = {"tokens": tokens, "seconds": round(wall, 1), "tokens_per_s": round(rate, 1),
                             "vs_first": round(rate / first, 2), "slots": slots}
        print(f"batch {size:>4}: {tokens} tokens in {wall:6.1f} s = {rate:6.1f} tok/s ({rate / first:.2f}x)"
              + (f", slots {slots}" if slots is not None else ""), flush=True)
        del backend
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
