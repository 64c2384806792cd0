"""The report's stage-by-stage table: each evaluated model paired with the evaluated model it
trained from (train_config.yaml's `model`), on a hand-made run folder."""

from __future__ import annotations

import json

import yaml

from mathpo.report import stage_gains


def _eval(root, stage, model, marks):
    d = root / stage / "t"
    d.mkdir(parents=True)
    d.joinpath("graded.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "correct": bool(c)}) + "\n"
                                                  for i, c in enumerate(marks)))
    return stage, {"model": model, "results": {"t": {"n": len(marks), "accuracy": sum(marks) / len(marks)}}}


def test_each_stage_against_its_start_model(tmp_path):
    root = tmp_path / "runs" / "r"
    for folder, start in (("iter_1/dpo", "runs/r/iter_0/warmup_sft/model"), ("iter_1/sft", "runs/r/iter_1/dpo/model"),
                          ("iter_0/warmup_sft", "base-model")):
        (root / folder / "model").mkdir(parents=True)
        (root / folder / "train_config.yaml").write_text(yaml.safe_dump({"model": start}))
    # paths as the loop records them: relative to where it ran (runs/r/...), or absolute
    evals = [_eval(root, "iter_0/eval_warmup_sft", "runs/r/iter_0/warmup_sft/model", [0, 0, 1, 1]),
             _eval(root, "iter_1/eval_dpo", str(root / "iter_1/dpo/model"), [1, 0, 1, 1]),
             _eval(root, "iter_1/eval_sft", "runs/r/iter_1/sft/model", [1, 1, 1, 0])]
    text = stage_gains(root, evals)
    # dpo vs warm-up: q0 gained; diffs 1,0,0,0: mean 0.25. sft vs dpo: q1 gained, q3 lost: mean 0
    assert "| it1:dpo | it0:warmup_sft | t | 4 | +25.0 [" in text and "| 1/0 | 1 |" in text
    assert "| it1:sft | it1:dpo | t | 4 | +0.0 [" in text and "| 1/1 | 1 |" in text
    assert "it0:warmup_sft | base" not in text  # the base model was not evaluated: no row
    assert stage_gains(root, evals[:1]) == ""


def test_a_run_named_like_a_stage_folder_still_maps_its_models(tmp_path):
    from mathpo.report import _in_run

    root = tmp_path / "moved" / "dpo"  # a run called dpo, moved after it ran
    (root / "iter_1" / "dpo" / "model").mkdir(parents=True)
    (root / "iter_1" / "sft" / "model").mkdir(parents=True)
    recorded = "runs/dpo/iter_1/dpo/model"  # as the stages wrote it, relative to where the loop ran
    assert _in_run(root, recorded) == str((root / "iter_1" / "dpo" / "model").resolve())
    assert _in_run(root, "runs/dpo/iter_1/sft/model") == str((root / "iter_1" / "sft" / "model").resolve())
    assert _in_run(root, str(tmp_path / "base")) == str((tmp_path / "base").resolve())  # outside the run
