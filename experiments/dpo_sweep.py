"""Why DPO does (not) move a small model: DPO variants from one loop run's warm-up model, each
evaluated on the run's own test questions and paired against the warm-up model (issue #16, item 4).

    python experiments/dpo_sweep.py runs/demo                         # every variant below
    python experiments/dpo_sweep.py runs/demo --variants k1,k3,sft-k3 --out runs/demo-sweep

RUN is a finished `mathpo loop` run with iter_0/warmup_sft/model, iter_0/eval_warmup_sft (greedy,
per test set) and iter_1/sample/graded.jsonl (the warm-up model's samples of the DPO stage). For each
variant the script only composes mathpo's own verbs, as a user would:
`mathpo pairs --kind dpo --k K` on those samples -> `mathpo train --method dpo` (or `sft` on the
chosen solutions: the control that has DPO's NLL term without its preference term) from the warm-up
model -> `mathpo eval` greedy on RUN/data/test/TEST.jsonl with the run's template and calculator.
It prints one row per variant: pairs, steps, the first and last logged chosen/rejected log-probs and
reward margin and the implicit rewards beta * (log pi - log pi_ref) of chosen and rejected (a
negative chosen reward is DPO's known failure: the chosen solutions grow less likely), accuracy and the paired change
against the warm-up model (95% interval, gained/lost, exact McNemar p). Resumable: a variant whose
folder is complete is read back, not rerun. OUT/sweep.md holds the table, OUT/sweep.json the figures.

    python experiments/dpo_sweep.py runs/ablation --step full/iter_2 --tests synth,multiarith

`--step ARM/iter_I` sweeps Step-DPO instead (item 5): every variant starts from the model that
iteration's Step-DPO stage trained from (RUN/ARM/iter_I/sft/model), on that stage's own step pairs
(RUN/ARM/iter_I/step_pairs/step.jsonl), with the run's own step settings as the base, and is paired
against the loop's evaluation of its start model (RUN/ARM/iter_I/eval_sft). Its `sft` variant is
the NLL control: SFT from the question and the steps before the first wrong one to the chosen step
and the rest of the rollout that reached the gold answer (`full_chosen`). OUT: RUN-step-sweep-ARM-iter_I.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mathpo.grading.metrics import pass_rates  # noqa: E402
from mathpo.records import atomic_write_text, read_jsonl  # noqa: E402
from mathpo.report import change, paired  # noqa: E402

# name -> (pairs per question k, method, TRL overrides on top of BASE)
BASE = {"beta": 0.1, "learning_rate": 2.0e-5, "num_train_epochs": 1, "per_device_train_batch_size": 8,
        "loss_type": ["sigmoid", "sft"], "gradient_checkpointing": False, "optim": "adamw_torch_fused",
        "save_steps": 20}
VARIANTS = {
    "warmup": (0, "none", {}),                              # no training: the eval path against the loop's
    "k1": (1, "dpo", {}),                                   # the demo's DPO stage
    "k3": (3, "dpo", {}),                                   # DPO-ST's pairs per question
    "k3-sigmoid": (3, "dpo", {"loss_type": ["sigmoid"]}),   # without the NLL term
    "sft-k3": (3, "sft", {}),                               # the NLL term alone, on the same chosen
    # TRL's sigmoid term works on summed log-probs, its sft term is a per-token mean: at weight 1 the
    # preference gradient outweighs the NLL's several times over; these tilt it back
    "k3-w0.2": (3, "dpo", {"loss_weights": [0.2, 1.0]}),
    "k3-w0.05": (3, "dpo", {"loss_weights": [0.05, 1.0]}),
    "k3-lr5e-5": (3, "dpo", {"learning_rate": 5.0e-5}),
    "k3-beta0.5": (3, "dpo", {"beta": 0.5}),
    "k3-ep2": (3, "dpo", {"num_train_epochs": 2}),
}
# Step-DPO: name -> (k (0: the stage's own pairs), method, TRL overrides on top of the run's step overrides;
# named settings are spelled out, so a variant means the same whatever the run's own base was)
STEP_VARIANTS = {
    "start": (0, "none", {}),                               # no training: the eval path against the loop's
    "stage": (0, "dpo", {}),                                # the run's own step settings, unchanged
    "w1": (0, "dpo", {"loss_weights": [1.0, 1.0]}),         # [sigmoid, sft] 1:1
    "w0.2": (0, "dpo", {"loss_weights": [0.2, 1.0]}),
    "w0.05": (0, "dpo", {"loss_weights": [0.05, 1.0]}),
    "sigmoid": (0, "dpo", {"loss_type": ["sigmoid"]}),      # without the NLL term
    "w0.2-lr3e-6": (0, "dpo", {"loss_weights": [0.2, 1.0], "learning_rate": 3.0e-6}),
    "w0.2-beta0.4": (0, "dpo", {"loss_weights": [0.2, 1.0], "beta": 0.4}),  # Step-DPO's own beta
    "w0.2-ep3": (0, "dpo", {"loss_weights": [0.2, 1.0], "num_train_epochs": 3}),
    "w0.2-lr1e-5": (0, "dpo", {"loss_weights": [0.2, 1.0], "learning_rate": 1.0e-5}),
    "sft": (0, "sft", {}),                                  # the NLL term alone (see the docstring)
    "sft-lr1e-5": (0, "sft", {"learning_rate": 1.0e-5}),
}
SFT_KEYS = {"learning_rate", "num_train_epochs", "per_device_train_batch_size", "gradient_checkpointing", "optim",
            "save_steps"}


def mathpo(*args: str) -> None:
    cmd = [sys.executable, "-c", "from mathpo.cli import main; main()", *args]
    print("$ mathpo " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def _kv(overrides: dict) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in overrides.items()]


def trends(metrics: Path) -> dict:
    """First and last logged chosen/rejected log-probs and reward margin (TRL's names)."""
    rows = [r for r in read_jsonl(metrics) if "logps/chosen" in r]
    if not rows:
        return {}
    pick = ("logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "rewards/accuracies")
    return {"first": {k: rows[0][k] for k in pick}, "last": {k: rows[-1][k] for k in pick},
            "mean_last_quarter": {k: sum(r[k] for r in rows[-max(1, len(rows) // 4):]) / max(1, len(rows) // 4)
                                  for k in pick}}


@dataclass
class Sweep:
    """What the variants share: the model they train from, the loop's eval of it, the base settings."""
    run: Path
    start: Path
    reference: Path  # REFERENCE/TEST/graded.jsonl: the loop's greedy eval of `start`
    variants: dict
    base: dict
    step_pairs: Path | None = None  # Step-DPO: the stage's own pairs (else made from the DPO stage's samples)


def dpo_sweep(run: Path) -> Sweep:
    return Sweep(run, run / "iter_0/warmup_sft/model", run / "iter_0/eval_warmup_sft", VARIANTS, BASE)


def step_sweep(run: Path, where: str, cfg: dict) -> Sweep:
    it = run / where
    return Sweep(run, it / "sft/model", it / "eval_sft", STEP_VARIANTS, dict(cfg["step"]["overrides"]),
                 step_pairs=it / "step_pairs/step.jsonl")


def chosen_rows(sw: Sweep, pairs: Path, template: str) -> list[dict]:
    """SFT rows with DPO's NLL target: each distinct chosen solution once (the DPO rows repeat one up
    to k times), or for step pairs the prompt with its correct steps -> the chosen step and the rest of
    the rollout from it that reached the gold answer (a lone step would teach the model to stop)."""
    if sw.step_pairs is not None:
        from mathpo import models
        from mathpo.pairs.formats import step_prompt

        tok = models.load_tokenizer(str(sw.start))
        rows = [{"prompt": step_prompt(tok, r, template), "completion": r["full_chosen"], "id": r.get("id")}
                for r in read_jsonl(pairs)]
    else:
        rows = [{"prompt": r["prompt"], "completion": r["chosen"], "id": r.get("id")} for r in read_jsonl(pairs)]
    seen, uniq = set(), []
    for r in rows:
        if (r["prompt"], r["completion"]) not in seen:
            seen.add((r["prompt"], r["completion"]))
            uniq.append(r)
    return uniq


def run_variant(sw: Sweep, out: Path, name: str, cfg: dict, tests: list[str]) -> dict:
    k, method, over = sw.variants[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if method == "none":
        return evaluate(sw, folder, sw.start, cfg, tests,
                        {"variant": name, "k": 0, "method": method, "trl": {}, "pairs": 0, "steps": 0, "trends": {}})
    pairs = sw.step_pairs or out / f"pairs-k{k}.jsonl"
    if not pairs.is_file():
        mathpo("pairs", "--kind", "dpo", "--input", str(sw.run / "iter_1/sample/graded.jsonl"), "--output",
               str(pairs), "--k", str(k), "--template", cfg["template"])
    data = pairs
    trl = {**sw.base, **over}
    if method == "sft":
        data = folder / "chosen.jsonl"
        if not data.is_file():
            atomic_write_text(data, "".join(json.dumps(r) + "\n" for r in chosen_rows(sw, pairs, cfg["template"])))
        trl = {k_: v for k_, v in trl.items() if k_ in SFT_KEYS}
    model = folder / "train/model"
    if not (model / "config.json").is_file():
        mathpo("train", "--method", method, "--model", str(sw.start), "--data", str(data),
               "--out", str(folder / "train"), "--template", cfg["template"], "--resume", *_kv(trl))
    result = {"variant": name, "k": k, "method": method, "trl": trl, "pairs": sum(1 for _ in read_jsonl(data))}
    state = sorted((folder / "train").glob("checkpoints/checkpoint-*/trainer_state.json"))
    result["steps"] = json.loads(state[-1].read_text())["global_step"] if state else None
    result["trends"] = trends(folder / "train/metrics.jsonl")
    return evaluate(sw, folder, model, cfg, tests, result)


def evaluate(sw: Sweep, folder: Path, model: Path, cfg: dict, tests: list[str], result: dict) -> dict:
    """Greedy eval of `model` on each test set, paired against the loop's evaluation of the start model."""
    for test in tests:
        ev = folder / f"eval_{test}"
        if not (ev / "summary.json").is_file():
            args = ["eval", "--model", str(model), "--dataset", str(sw.run / "data/test" / f"{test}.jsonl"),
                    "--template", cfg["template"], "--temperature", "0", "--n", "1",
                    "--max-new-tokens", str(cfg["eval"]["max_new_tokens"]), "--out", str(ev)]
            if cfg.get("batch_size"):  # the loop's own rows together (bf16 rounds per batch shape)
                args += ["--batch-size", str(cfg["batch_size"])]
            mathpo(*args, *(["--calculator"] if cfg.get("calculator") else []))
        ref = pass_rates(read_jsonl(sw.reference / test / "graded.jsonl"))
        new = pass_rates(read_jsonl(ev / "graded.jsonl"))
        result[test] = {"accuracy": sum(new.values()) / len(new), "vs_start": paired(ref, new)}
    return result


def table(results: list[dict], tests: list[str]) -> str:
    head = ("| variant | pairs | steps | chosen logp first -> last | rejected logp first -> last |"
            " chosen / rejected reward, last quarter | margin |"
            + "".join(f" {t} acc | {t} vs start [95%] | gained/lost | p |" for t in tests))
    lines = [head, "|" + "---|" * (7 + 4 * len(tests))]
    for r in results:
        tr = r["trends"]
        f, la = tr.get("first", {}), tr.get("mean_last_quarter", {})
        cells = [r["variant"], str(r["pairs"]), str(r["steps"])]
        if tr:
            cells += [f"{f['logps/chosen']:.1f} -> {la['logps/chosen']:.1f}",
                      f"{f['logps/rejected']:.1f} -> {la['logps/rejected']:.1f}",
                      f"{la['rewards/chosen']:+.2f} / {la['rewards/rejected']:+.2f}", f"{la['rewards/margins']:.2f}"]
        else:  # no preference term (no training, or SFT): nothing to log, blank rather than nan
            cells += [""] * 4
        for t in tests:
            v = r[t]["vs_start"]
            cells += [f"{100 * r[t]['accuracy']:.1f}%",
                      change(v),
                      f"{v['gained']}/{v['lost']}", f"{v['mcnemar_p']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--step", metavar="ARM/iter_I", help="sweep that Step-DPO stage instead (e.g. full/iter_2)")
    ap.add_argument("--variants", help="comma-separated (default: every DPO variant, or every Step-DPO one)")
    ap.add_argument("--tests", default="synth", help="test sets of RUN/data/test to evaluate on")
    ap.add_argument("--out", type=Path, help="default RUN-dpo-sweep, or RUN-step-sweep-ARM-iter_I")
    a = ap.parse_args()
    cfg = json.loads((a.run / "config.json").read_text())
    sw = step_sweep(a.run, a.step, cfg) if a.step else dpo_sweep(a.run)
    names = a.variants.split(",") if a.variants else list(sw.variants)
    unknown = [n for n in names if n not in sw.variants]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: {', '.join(sw.variants)}")
    suffix = "-step-sweep-" + a.step.strip("/").replace("/", "-") if a.step else "-dpo-sweep"
    out = a.out or a.run.with_name(a.run.name + suffix)
    tests = a.tests.split(",")
    results = []
    for name in names:
        results.append(run_variant(sw, out, name, cfg, tests))
        atomic_write_text(out / "sweep.json", json.dumps(results, indent=1))
        atomic_write_text(out / "sweep.md", table(results, tests))
        print(table(results, tests), flush=True)


if __name__ == "__main__":
    main()
