"""Fault injection: `mathpo loop` (both recipes, tiny model, synthetic data) is SIGKILLed at seeded
random moments in every stage kind and re-run with the same command each time; it must end with the
same rows and figures as an uninterrupted run, and never print a traceback.

Kill moments: for each stage kind one write is drawn (seed `MATHPO_FAULT_SEED`, default 13) from the
writes an uninterrupted run makes -- the k-th append to samples.jsonl, graded.jsonl, the pairs files,
step.parts.jsonl, a training stage's metrics.jsonl (mid-training), an eval file, report.md, a
DONE.json -- and the process dies half-way through that write (records' `MATHPO_FAULT_KILL` hook:
half the bytes land, then SIGKILL, as in a power cut). Checkpoint saves are HF's own writes, so that
kill comes from outside: SIGKILL as soon as the checkpoint folder appears (mid-save).

`python -m pytest -s -q tests/test_faults.py` prints the tally (kills survived, rows lost / doubled,
files differing) and its last line is JSON.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from mathpo.records import write_jsonl

SEED = int(os.environ.get("MATHPO_FAULT_SEED", "13"))
SOLUTION = "First, 2 + 3 = <<2+3=5>>5.\nSo there are 5 apples.\n#### 5"
ORDER = ["data", "iter_1/sample", "iter_1/pairs", "iter_1/dpo", "iter_1/sample_dpo", "iter_1/rft", "iter_1/sft",
         "iter_1/eval_sft", "iter_1/step_sample", "iter_1/step_pairs", "iter_1/step_dpo", "iter_1/eval_step_dpo",
         "report"]
TRAINED = ("iter_1/dpo", "iter_1/sft")  # the tiny random model finds no step pairs: step_dpo does not train
# Fields that describe one process's work, not the stage's output, so a resumed stage differs by
# design: times; what this process generated / skipped / resumed (`tokens`, `questions_skipped`,
# `parts`); and HF's `train_loss` summary, averaged over the steps *this* process ran (0.0 when a kill
# came after the last checkpoint). The per-step rows of metrics.jsonl are compared in full.
VOLATILE = ("seconds", "sample_seconds", "seconds_this_run", "tokens_per_s", "tokens", "questions_skipped",
            "parts", "overheads")  # overheads: this process's load/start/grading seconds and model reuse
VOLATILE_ROWS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")
QUESTIONS, MAX_STEPS = 2, 2


def write_config(tmp_path: Path, model_dir: Path) -> Path:
    write_jsonl(tmp_path / "train.jsonl", [
        {"id": f"q{i}", "question": f"Tom has 2 apples and gets {i} more. How many apples?", "gold": str(2 + i),
         "solution": SOLUTION} for i in range(QUESTIONS)])
    write_jsonl(tmp_path / "test.jsonl", [
        {"id": f"t{i}", "question": f"Ann has {i} apples and gets 3 more. How many?", "gold": str(i + 3)}
        for i in range(2)])
    sample = {"max_new_tokens": 16, "temperature": 1.3}
    train = {"max_steps": MAX_STEPS, "per_device_train_batch_size": 2, "save_steps": 1, "report_to": [], "bf16": False,
             "gradient_checkpointing": False}
    cfg = {"name": "tiny", "out": str(tmp_path / "runs"), "model": str(model_dir), "recipe": ["dpo-st", "step-dpo"],
           "iterations": 1, "use_solutions": True, "batch_size": 16, "seed": 1, "template": "gsm8k",
           "train_data": {"dataset": str(tmp_path / "train.jsonl")},
           "test_sets": {"tiny": {"dataset": str(tmp_path / "test.jsonl")}},
           "warmup_sft": {"enabled": False}, "sample": {**sample, "n": 3}, "rft": {**sample, "n": 2, "pool": "all"},
           "dpo": {"k": 2, "overrides": train}, "sft": {"restart": "continue", "overrides": train},
           "step": {**sample, "n": 2, "template": "gsm8k", "overrides": train,
                    "pairs": {"rollouts": 2, "rectify_n": 2, "max_new_tokens": 16, "questions_per_part": 1}},
           "eval": {"max_new_tokens": 16, "after": ["sft", "step_dpo"]}}
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_loop(config: Path, log: Path, kill_at: str | None = None) -> subprocess.Popen:
    """`mathpo loop CONFIG` in a child process (one thread: the same float order in every run)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    env.pop("MATHPO_FAULT_KILL", None)
    if kill_at:
        env["MATHPO_FAULT_KILL"] = kill_at
    out = log.open("a")
    out.write(f"\n=== mathpo loop (kill at {kill_at or 'nothing'})\n")
    out.flush()
    return subprocess.Popen([sys.executable, "-m", "mathpo.cli", "loop", str(config)], stdout=out,
                            stderr=subprocess.STDOUT, env=env)


def run_loop(config: Path, log: Path, kill_at: str | None = None, kill_when: Path | None = None) -> int:
    """Run it to the end, or SIGKILL it once `kill_when` exists; its exit code (-9 when killed)."""
    proc = start_loop(config, log, kill_at)
    while kill_when is not None and proc.poll() is None:
        if kill_when.exists():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    return proc.wait(timeout=900)


def kill_plan(rng: random.Random) -> list[tuple[str, str]]:
    """(stage kind, MATHPO_FAULT_KILL value or 'ckpt:PATH'), one per kind, in loop order. The counts
    come from the config: one step part per question, a metrics row per step plus HF's summary row."""
    samplers = ("iter_1/sample", "iter_1/sample_dpo", "iter_1/step_sample")
    n_parts, steps = QUESTIONS, MAX_STEPS + 1
    train = rng.choice(TRAINED)
    kinds = {
        "sampling": f"{rng.choice(samplers)}/samples.jsonl@{rng.choice([1, 2])}",  # 2 = the final rewrite
        "grading": f"{rng.choice(samplers)}/graded.jsonl",
        "pairs": rng.choice(["iter_1/pairs/dpo.jsonl", "iter_1/rft/rft.jsonl"]),
        "step pairs": rng.choice([f"iter_1/step_pairs/step.parts.jsonl@{rng.randint(1, n_parts)}",
                                  "iter_1/step_pairs/step.jsonl"]),
        "training": f"{train}/metrics.jsonl@{rng.randint(1, steps)}",
        "checkpoint save": f"ckpt:{rng.choice(TRAINED)}/checkpoints/checkpoint-{rng.choice([1, 2])}",
        # an eval samples every test set in one file, then grades each set into its own folder
        "eval": f"{rng.choice(['iter_1/eval_sft', 'iter_1/eval_step_dpo'])}/"
                f"{rng.choice(['samples.jsonl', 'tiny/graded.jsonl', 'tiny/summary.json'])}",
        "report": rng.choice(["tiny/report.md", "tiny/comparisons.json"]),
        "stage record": f"{rng.choice(ORDER[:-1])}/DONE.json",
    }

    def position(target: str) -> tuple[int, str]:
        path = target.removeprefix("ckpt:")
        stage = next((s for s in ORDER if path.startswith(s + "/")), "report")
        return ORDER.index(stage), target

    return sorted(kinds.items(), key=lambda kv: position(kv[1]))


def _clean(obj, drop):
    if isinstance(obj, dict):
        return {k: _clean(v, drop) for k, v in obj.items() if k not in drop}
    if isinstance(obj, list):
        return [_clean(v, drop) for v in obj]
    return obj


def outputs(root: Path) -> dict[str, object]:
    """Every row file and stage record of a run, with timing fields dropped; models by their weights."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if "checkpoints" in rel or "tensorboard" in rel or p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix in (".jsonl", ".json"):  # paths inside (model folders, `out`) named apart from the run's place
            text = p.read_text().replace(str(root.parent), "OUT")
            out[rel] = ([_clean(json.loads(line), VOLATILE_ROWS) for line in text.splitlines() if line.strip()]
                        if p.suffix == ".jsonl" else _clean(json.loads(text), VOLATILE))
        elif p.name == "model.safetensors":
            out[rel] = p.read_bytes()
        elif p.name == "report.md":  # the accuracy table; the rest holds timings
            out[rel] = [line for line in p.read_text().splitlines() if "%" in line]
    return out


def _key(row) -> str:
    return json.dumps(row, sort_keys=True)


def tally(ref: dict, got: dict) -> dict:
    lost = doubled = 0
    for name, rows in ref.items():
        if isinstance(rows, list) and name.endswith(".jsonl"):
            a, b = Counter(map(_key, rows)), Counter(map(_key, got.get(name, [])))
            lost += sum((a - b).values())
            doubled += sum((b - a).values())
    differ = sorted(k for k in set(ref) | set(got) if ref.get(k) != got.get(k))
    return {"lost": lost, "doubled": doubled, "differ": differ}


@pytest.mark.slow  # ~2 min quiet, ~6 on the loaded 2-core machine: an uninterrupted loop beside 9 killed ones
def test_loop_survives_kills_in_every_stage_kind(tmp_path, tiny_model_dir):
    config = write_config(tmp_path, tiny_model_dir)
    ref_cfg = tmp_path / "ref.yaml"
    ref_cfg.write_text(config.read_text().replace(str(tmp_path / "runs"), str(tmp_path / "ref")))
    t0 = time.time()
    reference = start_loop(ref_cfg, tmp_path / "ref.log")  # runs beside the killed ones
    plan = kill_plan(random.Random(SEED))
    log, root = tmp_path / "loop.log", tmp_path / "runs" / "tiny"
    kills = []
    for kind, target in plan:
        if target.startswith("ckpt:"):
            rc = run_loop(config, log, kill_when=root / target.removeprefix("ckpt:"))
        else:
            rc = run_loop(config, log, kill_at=target if target.startswith("tiny/") else f"tiny/{target}")
        assert rc in (0, -signal.SIGKILL), f"{kind} ({target}): exit {rc}\n" + log.read_text()[-3000:]
        kills.append({"kind": kind, "at": target, "killed": rc == -signal.SIGKILL})
    assert run_loop(config, log) == 0, log.read_text()[-3000:]
    assert reference.wait(timeout=900) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 2000:][:4000]

    result = tally(outputs(tmp_path / "ref" / "tiny"), outputs(root))
    survived = sum(k["killed"] for k in kills)
    report = {"kills": survived, "planned": len(kills), "kinds": sorted({k["kind"] for k in kills if k["killed"]}),
              **result, "seconds": round(time.time() - t0, 1), "seed": SEED}
    for k in kills:
        print(f"  {k['kind']:<16} {k['at']:<45} {'killed, resumed' if k['killed'] else 'not reached'}")
    print(json.dumps(report))
    assert survived >= 6 and len(report["kinds"]) >= 6
    assert result["lost"] == 0 and result["doubled"] == 0
    assert result["differ"] == []
