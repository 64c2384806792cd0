"""experiments/dpo_sweep.py's own arithmetic: the reward trends it reads from TRL's logs and its table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("dpo_sweep", Path(__file__).parents[1] / "experiments/dpo_sweep.py")
sweep = importlib.util.module_from_spec(spec)
sys.modules["dpo_sweep"] = sweep  # dataclasses look their module up there
spec.loader.exec_module(sweep)


def test_trends_first_last_and_last_quarter(tmp_path):
    keys = ("logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected", "rewards/margins",
            "rewards/accuracies")
    rows = [{"step": i, **{k: float(i) for k in keys}} for i in range(1, 9)] + [{"train_runtime": 3.0}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t = sweep.trends(tmp_path / "m.jsonl")
    assert t["first"]["rewards/chosen"] == 1.0 and t["last"]["rewards/margins"] == 8.0
    assert t["mean_last_quarter"]["rewards/chosen"] == 7.5  # steps 7 and 8
    (tmp_path / "none.jsonl").write_text("")
    assert sweep.trends(tmp_path / "none.jsonl") == {}


def test_table_row_and_every_variant_is_well_formed():
    paired = {"diff": 0.095, "ci95": [0.029, 0.161], "gained": 33, "lost": 14, "mcnemar_p": 0.00794}
    row = {"variant": "k3-w0.2", "pairs": 186, "steps": 24, "trends": {}, "synth": {"accuracy": 0.565,
                                                                                   "vs_start": paired}}
    line = sweep.table([row], ["synth"]).splitlines()[2]
    assert line.startswith("| k3-w0.2 | 186 | 24 |") and "| 56.5% | +9.5 [+2.9, +16.1] | 33/14 | 0.00794 |" in line
    assert line.startswith("| k3-w0.2 | 186 | 24 |  |  |  |  | 56.5%") and "nan" not in line  # no trends: blank
    logged = {k: {"logps/chosen": -3.9, "logps/rejected": -13.6, "rewards/chosen": 0.02, "rewards/rejected": -0.25,
                  "rewards/margins": 0.26} for k in ("first", "mean_last_quarter")}
    line = sweep.table([{**row, "trends": logged}], ["synth"]).splitlines()[2]
    assert line.startswith("| k3-w0.2 | 186 | 24 | -3.9 -> -3.9 | -13.6 -> -13.6 | +0.02 / -0.25 | 0.26 | 56.5%")
    for name, (k, method, over) in sweep.VARIANTS.items():
        assert method in ("dpo", "sft", "none") and (k > 0 or method == "none"), name
        assert set(over) <= set(sweep.BASE) | {"loss_weights"}, name


def test_unknown_variant_is_refused(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"step": {"overrides": {}}}))
    monkeypatch.setattr("sys.argv", ["dpo_sweep.py", str(tmp_path), "--variants", "k9"])
    with pytest.raises(SystemExit, match="unknown variant"):
        sweep.main()
    monkeypatch.setattr("sys.argv", ["dpo_sweep.py", str(tmp_path), "--step", "full/iter_2", "--variants", "k3"])
    with pytest.raises(SystemExit, match="unknown variant.*w0.2"):  # a DPO variant is not a Step-DPO one
        sweep.main()


def test_step_sweep_starts_from_the_stage_model_on_its_own_pairs(tmp_path, tiny_model_dir):
    cfg = {"step": {"overrides": {"beta": 0.1, "learning_rate": 1e-5, "num_train_epochs": 1,
                                  "per_device_train_batch_size": 8, "loss_type": ["sigmoid", "sft"]}}}
    sw = sweep.step_sweep(tmp_path, "full/iter_2", cfg)
    assert sw.start == tmp_path / "full/iter_2/sft/model" and sw.reference == tmp_path / "full/iter_2/eval_sft"
    assert sw.base == cfg["step"]["overrides"] and sw.variants is sweep.STEP_VARIANTS
    for name, (k, method, over) in sweep.STEP_VARIANTS.items():
        assert k == 0 and method in ("dpo", "sft", "none"), name
        assert set(over) <= set(sw.base) | {"loss_weights"}, name
    # the NLL control: the question and its correct steps -> chosen step + the rest of its good rollout
    pair = {"prompt": "Ann has 3 apples and buys 4. How many?", "initial_reason_steps": " She has 3.\n",
            "chosen": "She has 3 + 4 = <<3+4=7>>7.\n", "rejected": "She has 3 * 4 = <<3*4=12>>12.\n",
            "full_chosen": "She has 3 + 4 = <<3+4=7>>7.\n#### 7", "full_rejected": "x", "id": "q1"}
    pairs = tmp_path / "step.jsonl"
    pairs.write_text((json.dumps(pair) + "\n") * 2)  # a repeated pair trains once
    sw.start = tiny_model_dir
    rows = sweep.chosen_rows(sw, pairs, "gsm8k")
    assert rows == [{"prompt": "Question: Ann has 3 apples and buys 4. How many?\nAnswer: She has 3.\n",
                     "completion": "She has 3 + 4 = <<3+4=7>>7.\n#### 7", "id": "q1"}]
