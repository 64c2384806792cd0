"""Benchmark: DPO on CPU, TRL's DPOTrainer with its defaults vs `mathpo train --method dpo`.

    python bench/training.py                      # 32 GSM8K pairs, SmolLM2-135M, batch 4, 8 steps
    python bench/training.py --variants trl,mathpo,mathpo-lora,mathpo-nockpt

Same 32 pairs (GSM8K train questions rendered with chat-boxed; chosen = the gold solution, rejected =
the same solution with the digits of its last two lines changed, ~300 tokens a sequence), same model,
same batch of 4 pairs, same number of steps, full fine-tuning. Variants, each in its own process so
peak memory (ru_maxrss) is its own:
- trl: DPOTrainer defaults in fp32 (bf16=False; TRL's bf16 default needs use_cpu on a CPU machine):
  reference model in memory, gradient checkpointing on, lr 1e-6;
- mathpo: `mathpo.training.train("dpo", ...)` with mathpo's defaults (bf16 autocast where the CPU has it,
  reference log-probs precomputed, no reference model, gradient checkpointing on, TRL's fused LM head
  with CPU tiles scoring completion positions only, length-grouped);
- mathpo-lora: the same with `lora=True` (its own default lr; the frozen base in bf16);
- a `-nockpt` suffix (mathpo-nockpt, mathpo-lora-nockpt) turns gradient checkpointing off: faster, more memory.
Seconds per step = Trainer's train_runtime / steps (the reference pass of mathpo is reported apart).
Prints a table, the ratios against trl, and last one JSON line with every figure.
Timings are only comparable on a quiet machine (other work on the CPU slows every variant).
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


def make_pairs(n: int, tokenizer, lo: int = 250, hi: int = 350) -> list[dict]:
    """n pairs whose prompt + chosen is lo..hi tokens; rejected = chosen with its last lines' digits shifted."""
    from mathpo import data, prompts

    out = []
    for rec in data.load("gsm8k", "train"):
        prompt = prompts.render(tokenizer, rec["question"], "chat-boxed")
        chosen = rec["solution"]
        n_tok = len(tokenizer(prompt + chosen, add_special_tokens=False).input_ids)
        if not lo <= n_tok <= hi:
            continue
        head, tail = chosen.rsplit("\n", 2)[0], "\n".join(chosen.rsplit("\n", 2)[1:])
        tail = re.sub(r"\d", lambda m: str((int(m.group()) + 1) % 10), tail)
        out.append({"prompt": prompt, "chosen": chosen, "rejected": head + "\n" + tail})
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} GSM8K train questions of {lo}..{hi} tokens")


def run_variant(variant: str, pairs_path: str, steps: int, batch: int, out: str) -> dict:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from mathpo import models
    from mathpo.records import read_jsonl

    rows = read_jsonl(pairs_path)
    model = models.resolve("smollm2-135m-instruct")
    t0 = time.perf_counter()
    if variant == "trl":
        import datasets
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(output_dir=out, bf16=False, per_device_train_batch_size=batch, max_steps=steps,
                         logging_steps=1, report_to=[], save_strategy="no", seed=0)
        trainer = DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=models.load_tokenizer(model))
        setup = time.perf_counter() - t0
        result = trainer.train()
        logs = [h for h in trainer.state.log_history if "loss" in h]
        runtime = result.metrics["train_runtime"]
    else:
        from mathpo.training import train

        train("dpo", model, rows, out, lora="-lora" in variant,
              trl={"max_steps": steps, "per_device_train_batch_size": batch, "save_strategy": "no",
                         "report_to": [], "gradient_checkpointing": not variant.endswith("-nockpt")})
        all_logs = read_jsonl(Path(out) / "metrics.jsonl")
        logs = [h for h in all_logs if "loss" in h]
        runtime = next(h["train_runtime"] for h in all_logs if "train_runtime" in h)
        setup = time.perf_counter() - t0 - runtime  # model load + tokenizing + reference log-probs + save
    return {"variant": variant, "s_per_step": runtime / steps, "setup_s": setup,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "final_loss": logs[-1]["loss"], "final_margin": logs[-1]["rewards/margins"],
            "margins": [round(h["rewards/margins"], 4) for h in logs],
            "losses": [round(h["loss"], 4) for h in logs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--variants", default="trl,mathpo")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--pairs-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(run_variant(a.child, a.pairs_file, a.steps, a.batch, a.out)))
        return

    from mathpo import models
    from mathpo.records import write_jsonl

    tok = models.load_tokenizer("smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="mathpo-bench-train-"))
    pairs_file = work / "pairs.jsonl"
    write_jsonl(pairs_file, make_pairs(a.pairs, tok))
    results = {}
    for v in a.variants.split(","):
        cmd = [sys.executable, __file__, "--child", v, "--pairs-file", str(pairs_file), "--out", str(work / v),
               "--steps", str(a.steps), "--batch", str(a.batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
        if line is None:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"variant {v} failed (rc {proc.returncode})")
        results[v] = json.loads(line[7:])
        r = results[v]
        print(f"{v:12s} {r['s_per_step']:7.2f} s/step  peak {r['peak_gb']:5.2f} GB  setup {r['setup_s']:6.1f} s  "
              f"final loss {r['final_loss']:.4f}  margin {r['final_margin']:+.4f}  margins {r['margins']}", flush=True)
    summary = {"pairs": a.pairs, "steps": a.steps, "batch": a.batch, "results": results}
    if "trl" in results:
        base = results["trl"]
        for v, r in results.items():
            if v != "trl":
                speed, mem = base["s_per_step"] / r["s_per_step"], r["peak_gb"] / base["peak_gb"]
                summary[f"{v}_speedup"], summary[f"{v}_memory_ratio"] = round(speed, 2), round(mem, 3)
                print(f"{v}: {speed:.2f}x trl's speed per step, {mem:.2f}x its peak memory")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
