"""A decode step's layers and sampling alone: the hf backend's packed model with its layers fused
(`mathpo/sampling/fused.py`, the default on CPU) against the same packed model with the layers'
own forwards, and the fused sampler (`sampler.choose` at top-p 1, one CPU op) against the PyTorch
code it replaces, side by side in one run on the same inputs; the outputs compared bit for bit.

    python bench/fused_layers.py                       # SmolLM2-135M, 128 rows, bf16
    python bench/fused_layers.py --rows 32 --reps 20

One step here is every decoder layer, the final norm and the output layer over `--rows` rows of
one token each (hidden states drawn at a real model's scale, positions 100-400), with attention
over the row's own token only: what the fusion changes (norms, projections, rotary, MLP), not the
KV cache read, which `bench/decode_attention.py` times. Sampling: the step's logits, temperature
0.7, one uniform per row. Prints ms per step for each path and the ratios; last line: one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch

from mathpo import models
from mathpo.sampling import fused, kernel, packed, sampler


def step(model, hidden, positions):
    """Every layer, the final norm and the output layer, as one decode step runs them."""
    inner = model.model
    embeddings = inner.rotary_emb(hidden, positions)
    for layer in inner.layers:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=embeddings)
    return model.lm_head(inner.norm(hidden))[:, -1]


def timed(fn, reps: int) -> tuple[float, object]:
    out = fn()  # warm-up (and the result compared)
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3, out


def python_choose(logits, draws):
    ops = kernel.ops
    kernel.ops = lambda: None  # sampler.choose's PyTorch path
    try:
        return sampler.choose(logits.float(), 0.7, 1.0, draws)
    finally:
        kernel.ops = ops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if kernel.ops() is None:
        print("mathpo's CPU ops could not be built here: nothing to compare", file=sys.stderr)
        return 2
    base = models.load(args.model, quiet=True).model.to(torch.bfloat16).eval()
    base.set_attn_implementation("sdpa")
    plain, done = copy.deepcopy(base), copy.deepcopy(base)
    if not packed.pack(plain) or not packed.pack(done):
        print("oneDNN's bf16 weight reorder does not work on this CPU: nothing is packed or fused", file=sys.stderr)
        return 2
    modules = fused.fuse(done)
    gen = torch.Generator().manual_seed(0)
    width = base.config.hidden_size
    hidden = (torch.randn(args.rows, 1, width, generator=gen) * 2).to(torch.bfloat16)
    positions = torch.randint(100, 400, (args.rows, 1), generator=gen)
    with torch.inference_mode():
        unfused_ms, want = timed(lambda: step(plain, hidden, positions), args.reps)
        fused_ms, got = timed(lambda: step(done, hidden, positions), args.reps)
        draws = torch.rand(args.rows, generator=gen).tolist()
        torch_ms, want_picks = timed(lambda: python_choose(got, draws), args.reps)
        op_ms, picks = timed(lambda: sampler.choose(got, 0.7, 1.0, draws), args.reps)
    result = {"bench": "fused_layers", "model": args.model, "rows": args.rows, "reps": args.reps,
              "threads": args.threads, "fused_modules": modules,
              "unfused_ms_per_step": round(unfused_ms, 3), "fused_ms_per_step": round(fused_ms, 3),
              "fused_vs_unfused": round(unfused_ms / fused_ms, 2), "same_logits": bool(torch.equal(got, want)),
              "torch_sampling_ms": round(torch_ms, 3), "fused_sampling_ms": round(op_ms, 3),
              "fused_vs_torch_sampling": round(torch_ms / op_ms, 2),
              "same_picks": picks.tolist() == want_picks.tolist()}
    print(f"{args.rows} rows, {len(base.model.layers)} layers + output layer, bf16, packed linears: "
          f"fused {fused_ms:.2f} ms a step, the layers' own forwards {unfused_ms:.2f} ms "
          f"({result['fused_vs_unfused']}x); logits equal: {result['same_logits']}")
    print(f"sampling (temperature 0.7, top-p 1): one op {op_ms:.2f} ms, PyTorch {torch_ms:.2f} ms "
          f"({result['fused_vs_torch_sampling']}x); picks equal: {result['same_picks']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
