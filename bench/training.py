"""Benchmark: training on CPU, TRL's trainers with their defaults vs `mathpo train`, DPO and SFT.

    python bench/training.py                      # DPO: 32 GSM8K pairs, SmolLM2-135M, batch 4, 8 steps
    python bench/training.py --variants trl,mathpo,trl-sft,mathpo-sft,mathpo-lora,mathpo-sft-lora
    python bench/training.py --variants trl,mathpo,mathpo-adafactor,mathpo-fp32,mathpo-nockpt

DPO: the same 32 pairs (GSM8K train questions rendered with chat-boxed; chosen = the gold solution,
rejected = the same solution with the digits of its last two lines changed, ~300 tokens a sequence).
SFT (`-sft`): 32 GSM8K train rows {prompt, completion = gold solution} of 100..350 tokens (lengths
vary, as real SFT rows do), batch `--sft-batch`. Same model, batch and number of steps on both sides,
full fine-tuning. Variants, each in its own process so peak memory (ru_maxrss) is its own:
- trl / trl-sft: DPOTrainer / SFTTrainer defaults in fp32 (bf16=False; TRL's bf16 default needs
  use_cpu on a CPU machine): AdamW (fused), the reference model in memory (DPO), gradient
  checkpointing on, lr 1e-6 (DPO) / 2e-5 (SFT);
- mathpo / mathpo-sft: `mathpo.training.train` with mathpo's defaults (bf16 autocast where the CPU
  has it, TRL's AdamW, reference log-probs precomputed and no reference model,
  gradient checkpointing on, TRL's fused LM head with CPU tiles scoring completion positions only,
  length-grouped batches, padding-free SFT; TCMalloc where the system has it, as `mathpo train`
  runs, see `mathpo.allocator`), same lr as TRL;
- suffixes: `-lora` (LoRA, its own default lr, the frozen base in bf16), `-nockpt` (gradient
  checkpointing off), `-fp32` (no bf16 autocast), `-adafactor` (Adafactor instead of AdamW: less memory),
  `-adamw8bit` (AdamW with 8-bit states, torchao's `adamw_torch_8bit`; needs `pip install 'mathpo[lowmem]'`),
  `-padded` (SFT with padding instead of padding-free), `-threads1` (one thread), `-glibc` (mathpo
  on the system's malloc); `trl-tcmalloc` (TRL's defaults under TCMalloc, for how much of mathpo's
  gain is the allocator). The ratios are always against `trl` as a user runs it (the system's malloc).
Seconds per step = Trainer's train_runtime / steps (mathpo's reference pass is in setup_s, so the
end-to-end ratio, set-up plus steps, is printed too).
Prints a table, the ratios against trl (trl-sft for SFT variants), and last one JSON line with every
figure. Timings are only comparable on a quiet machine (other work on the CPU slows every variant):
the variants run one after the other in the same run, so a loaded machine slows them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from mathpo import allocator  # noqa: E402 (after the path is set)


def _gsm8k(tokenizer, lo: int, hi: int):
    """(prompt, solution) of GSM8K train questions whose prompt + solution is lo..hi tokens."""
    from mathpo import data, prompts

    for rec in data.load("gsm8k", "train"):
        prompt = prompts.render(tokenizer, rec["question"], "chat-boxed")
        n_tok = len(tokenizer(prompt + rec["solution"], add_special_tokens=False).input_ids)
        if lo <= n_tok <= hi:
            yield prompt, rec["solution"]


def make_pairs(n: int, tokenizer, lo: int = 250, hi: int = 350) -> list[dict]:
    """n pairs whose prompt + chosen is lo..hi tokens; rejected = chosen with its last lines' digits shifted."""
    out = []
    for prompt, chosen in _gsm8k(tokenizer, lo, hi):
        head, tail = chosen.rsplit("\n", 2)[0], "\n".join(chosen.rsplit("\n", 2)[1:])
        tail = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), tail)
        out.append({"prompt": prompt, "chosen": chosen, "rejected": head + "\n" + tail})
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} GSM8K train questions of {lo}..{hi} tokens")


def make_sft_rows(n: int, tokenizer, lo: int = 100, hi: int = 350) -> list[dict]:
    out = [{"prompt": p, "completion": c} for p, c in _gsm8k(tokenizer, lo, hi)][:n]
    if len(out) < n:
        raise SystemExit(f"only {len(out)} GSM8K train questions of {lo}..{hi} tokens")
    return out


SUFFIXES = ("-sft", "-lora", "-nockpt", "-fp32", "-adafactor", "-adamw8bit", "-padded", "-threads1", "-glibc")
TRL_SUFFIXES = ("-sft", "-tcmalloc")


def parse_variant(variant: str) -> tuple[str, set[str]]:
    base, _, rest = variant.partition("-")
    flags = {"-" + f for f in rest.split("-") if f}
    allowed = set(TRL_SUFFIXES if base == "trl" else SUFFIXES)
    if base not in ("trl", "mathpo") or not flags <= allowed:
        raise SystemExit(f"unknown variant {variant}: trl[-sft][-tcmalloc] or mathpo with {', '.join(SUFFIXES)}")
    return base, flags


def run_variant(variant: str, rows_path: str, steps: int, batch: int, out: str) -> dict:
    import torch

    base, flags = parse_variant(variant)
    torch.set_num_threads(1 if "-threads1" in flags else min(2, os.cpu_count() or 1))
    from mathpo import models
    from mathpo.records import read_jsonl

    rows = read_jsonl(rows_path)
    method = "sft" if "-sft" in flags else "dpo"
    model = models.resolve("smollm2-135m-instruct")
    t0 = time.perf_counter()
    if base == "trl":
        import datasets
        from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

        config, trainer_cls = (SFTConfig, SFTTrainer) if method == "sft" else (DPOConfig, DPOTrainer)
        args = config(output_dir=out, bf16=False, per_device_train_batch_size=batch, max_steps=steps,
                      logging_steps=1, report_to=[], save_strategy="no", seed=0)
        trainer = trainer_cls(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                              processing_class=models.load_tokenizer(model))
        setup = time.perf_counter() - t0
        result = trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        runtime = result.metrics["train_runtime"]
    else:
        from mathpo.training import train

        overrides = {"max_steps": steps, "per_device_train_batch_size": batch, "save_strategy": "no",
                     "report_to": [], "gradient_checkpointing": "-nockpt" not in flags}
        if "-fp32" in flags:
            overrides["bf16"] = False
        if "-adafactor" in flags:
            overrides["optim"] = "adafactor"
        if "-adamw8bit" in flags:
            overrides["optim"] = "adamw_torch_8bit"  # torchao's block-wise 8-bit AdamW states
        if "-padded" in flags:
            overrides["padding_free"] = False
        train(method, model, rows, out, lora="-lora" in flags, trl=overrides)
        all_logs = read_jsonl(Path(out) / "metrics.jsonl")
        logs = [h for h in all_logs if "loss" in h]
        runtime = next(h["train_runtime"] for h in all_logs if "train_runtime" in h)
        setup = time.perf_counter() - t0 - runtime  # model load + tokenizing + reference log-probs + save
    curve = "rewards/margins" if method == "dpo" else "loss"
    return {"variant": variant, "method": method, "s_per_step": runtime / steps, "setup_s": setup,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "allocator": allocator.active(),
            "final_loss": logs[-1]["loss"], "final_margin": logs[-1].get("rewards/margins"),
            "curve": [round(h[curve], 4) for h in logs], "curve_of": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32, help="DPO pairs (and SFT rows)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4, help="DPO batch (pairs)")
    ap.add_argument("--sft-batch", type=int, default=8, help="SFT batch (rows)")
    ap.add_argument("--variants", default="trl,mathpo")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--rows-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(run_variant(a.child, a.rows_file, a.steps, a.batch, a.out)))
        return

    from mathpo import models
    from mathpo.records import write_jsonl

    variants = a.variants.split(",")
    for v in variants:
        parse_variant(v)
    tok = models.load_tokenizer("smollm2-135m-instruct")
    # removed at the end: each variant leaves a model and checkpoints (~1 GB) in it
    with tempfile.TemporaryDirectory(prefix="mathpo-bench-train-") as tmp:
        work = Path(tmp)
        files = {"dpo": work / "pairs.jsonl", "sft": work / "sft.jsonl"}
        write_jsonl(files["dpo"], make_pairs(a.pairs, tok))
        write_jsonl(files["sft"], make_sft_rows(a.pairs, tok))
        results = {}
        for v in variants:
            flags = parse_variant(v)[1]
            sft = "-sft" in flags
            cmd = [sys.executable, __file__, "--child", v, "--rows-file", str(files["sft" if sft else "dpo"]),
                   "--out", str(work / v), "--steps", str(a.steps), "--batch", str(a.sft_batch if sft else a.batch)]
            env = {**os.environ, "TQDM_DISABLE": "1"}
            if (v.startswith("mathpo") and "-glibc" not in flags) or "-tcmalloc" in flags:
                env = allocator.preload_env(env) or env  # what `mathpo train` runs on (mathpo.allocator)
            else:
                env["MATHPO_MALLOC"] = "system"
                env["LD_PRELOAD"] = " ".join(p for p in env.get("LD_PRELOAD", "").split() if "tcmalloc" not in p)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
            if line is None:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise SystemExit(f"variant {v} failed (rc {proc.returncode})")
            results[v] = r = json.loads(line[7:])
            margin = f"margin {r['final_margin']:+.4f}  " if r["final_margin"] is not None else ""
            lib = r["allocator"].rsplit("/", 1)[-1]
            print(f"{v:18s} {lib:26s} {r['s_per_step']:7.2f} s/step  peak {r['peak_gb']:5.2f} GB  "
                  f"setup {r['setup_s']:6.1f} s  "
                  f"final loss {r['final_loss']:.4f}  {margin}{r['curve_of']} {r['curve']}", flush=True)
    summary = {"pairs": a.pairs, "steps": a.steps, "batch": a.batch, "sft_batch": a.sft_batch,
               "load_avg_1m": round(os.getloadavg()[0], 2), "results": results}
    for v, r in results.items():
        ref = "trl-sft" if r["method"] == "sft" else "trl"
        if v.startswith("mathpo") and ref in results:
            base = results[ref]
            speed, mem = base["s_per_step"] / r["s_per_step"], r["peak_gb"] / base["peak_gb"]
            # end to end: set-up counted too, since mathpo moves the reference pass out of the steps
            whole = (base["setup_s"] + a.steps * base["s_per_step"]) / (r["setup_s"] + a.steps * r["s_per_step"])
            summary[f"{v}_speedup"], summary[f"{v}_memory_ratio"] = round(speed, 2), round(mem, 3)
            summary[f"{v}_speedup_end_to_end"] = round(whole, 2)
            print(f"{v}: {speed:.2f}x {ref}'s speed per step ({whole:.2f}x end to end, set-up included), "
                  f"{mem:.2f}x its peak memory")
    print(f"load average (1 min) at the end: {summary['load_avg_1m']} on {os.cpu_count()} cores")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
