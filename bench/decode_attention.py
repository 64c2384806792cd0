"""The hf engine's decode-step attention alone: mathpo's fused CPU op (`mathpo/sampling/kernel.py`)
against PyTorch's flash kernel (the `decode_attention="flash"` path of `mathpo/sampling/slots.py`),
side by side in one run on the same slot cache, and both against float64 attention.

    python bench/decode_attention.py                    # SmolLM2-135M's shapes, 128 rows, bf16
    python bench/decode_attention.py --dtype float32 --rows 64

The cache has a real model's attention shapes (default SmolLM2-135M: 30 layers, 3 kv heads of 64,
3 query heads each) and a sampling call's layout: `--rows` rows, `--n` samples per prompt, prompts
of 90-120 tokens, each row 1-`--gen` tokens into its completion (uniform, seeded). One step is
`slots._decode` over every layer, the layers' caches cold as in a real step (each is read once per
step; together they exceed the CPU's caches). Prints ms per step for each path, the ratio, and the
largest error of each against float64 attention on layer 0; last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from mathpo.sampling import kernel, slots


def build(layers, rows, n, kv, group, dim, gen, dtype, seed=0):
    """A filled slot cache, the step's new queries/keys/values, and each row's (prompt slot, length)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    prompts = rows // n
    prompt_lens = [rng.randint(90, 120) for _ in range(prompts)]
    cache = slots.SlotCache(layers, rows, kv, 120, gen, dim, n, dtype, torch.device("cpu"), group=group)
    for t in cache.prompt_keys + cache.prompt_values + cache.keys + cache.values:
        t.normal_()
    order = [(p, k) for p in range(prompts) for k in range(n)]
    rng.shuffle(order)  # rows of one prompt apart, as the scheduler leaves them after refills
    gen_pos = [rng.randint(0, gen - 1) for _ in order]
    query = torch.randn(rows, kv * group, 1, dim, dtype=dtype)
    key, value = (torch.randn(rows, kv, 1, dim, dtype=dtype) for _ in range(2))
    return cache, order, gen_pos, prompt_lens, (query, key, value)


def step_ms(cache, order, gen_pos, prompt_lens, qkv, fused: bool, reps: int) -> float:
    cache.fused = fused
    cache.prepare_decode(gen_pos, [p for p, _ in order], [k for _, k in order], prompt_lens)
    scale = qkv[0].shape[-1] ** -0.5
    best = float("inf")
    for _ in range(reps + 1):  # the first one warms up
        t = time.perf_counter()
        for layer in range(len(cache.keys)):
            slots._decode(cache, layer, *qkv, scale)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def error(cache, order, gen_pos, prompt_lens, qkv, fused: bool) -> float:
    """Largest |output - float64 attention| on layer 0 (after the step wrote its keys/values)."""
    query, key, value = qkv
    cache.fused = fused
    cache.prepare_decode(gen_pos, [p for p, _ in order], [k for _, k in order], prompt_lens)
    out, _ = slots._decode(cache, 0, query, key, value, query.shape[-1] ** -0.5)
    worst = 0.0
    for b, (p, _) in enumerate(order):
        k = torch.cat([cache.prompt_keys[0][p, :, :prompt_lens[p]], cache.keys[0][b, :, :gen_pos[b] + 1]], 1)
        v = torch.cat([cache.prompt_values[0][p, :, :prompt_lens[p]], cache.values[0][b, :, :gen_pos[b] + 1]], 1)
        ref = torch.nn.functional.scaled_dot_product_attention(query[b:b + 1].double(), k[None].double(),
                                                               v[None].double(), enable_gqa=True)
        worst = max(worst, (out[b, 0].double() - ref[0, :, 0]).abs().max().item())
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt (rows sharing a prompt slot)")
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--group", type=int, default=3, help="query heads per kv head")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--gen", type=int, default=256, help="a row is 1 to this many tokens into its completion")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    ap.add_argument("--reps", type=int, default=5, help="timed steps per path (the best is kept)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.rows % args.n:
        ap.error("--rows must be a multiple of --n")
    if kernel.op() is None:
        print("the fused op could not be built here; nothing to compare", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    built = build(args.layers, args.rows, args.n, args.kv_heads, args.group, args.head_dim, args.gen,
                  getattr(torch, args.dtype))
    if not built[0].fused:
        print("the fused op does not take these shapes (head_dim a multiple of 32 up to 128, group <= 16)",
              file=sys.stderr)
        return 1
    with torch.inference_mode():
        fused_ms, flash_ms = (step_ms(*built, fused=f, reps=args.reps) for f in (True, False))
        fused_err, flash_err = (error(*built, fused=f) for f in (True, False))
    out = {"bench": "decode_attention", **{k: v for k, v in vars(args).items()},
           "fused_ms_per_step": round(fused_ms, 3), "flash_ms_per_step": round(flash_ms, 3),
           "fused_vs_flash": round(flash_ms / fused_ms, 2),
           "fused_max_error": fused_err, "flash_max_error": flash_err}
    print(f"{args.rows} rows x {args.layers} layers, {args.dtype}: fused {fused_ms:.1f} ms a step, flash "
          f"{flash_ms:.1f} ms ({out['fused_vs_flash']}x); largest error against float64: fused {fused_err:.2e}, "
          f"flash {flash_err:.2e}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
