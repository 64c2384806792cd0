"""`mathpo loop` on a tiny model with tiny settings: every stage runs with the real stage code, a
loop interrupted mid-stage resumes without redoing finished stages, and the report is written."""

from __future__ import annotations

import json

import pytest
import yaml

from mathpo import loop
from mathpo.cli import main
from mathpo.errors import UserError
from mathpo.loop_config import load_config
from mathpo.records import read_jsonl, write_jsonl

# One fixed 3-line solution: the warm-up SFT makes the tiny model memorize it, so its samples are
# right on questions whose answer is 5 and (at temperature 1.3) sometimes go wrong mid-way: enough
# for DPO pairs, RFT rows and step pairs located by rollouts.
SOLUTION = "First, 2 + 3 = <<2+3=5>>5.\nSo there are 5 apples.\n#### 5"
DPO_ST = ["sample", "pairs", "dpo", "eval_dpo", "sample_dpo", "rft", "sft", "eval_sft"]
STEP = ["step_sample", "step_pairs", "step_dpo", "eval_step_dpo"]


def tiny_config(tmp_path, model_dir) -> dict:
    train = [{"id": f"q{i}", "question": f"Tom has 2 apples and gets 3 more. How many apples? ({i})",
              "gold": "5", "solution": SOLUTION} for i in range(6)]
    write_jsonl(tmp_path / "train.jsonl", train)
    test = [{"id": f"t{i}", "question": f"Ann has 2 apples and gets 3 more. How many? ({i})", "gold": "5",
             "solution": SOLUTION} for i in range(3)]
    write_jsonl(tmp_path / "test.jsonl", test)
    sample = {"max_new_tokens": 32, "temperature": 1.3}  # the 29-token solution fits (a cut-off one is never correct)
    # fp32: bf16 autocast on a CPU costs more than it saves on a model this small
    train_fast = {"max_steps": 2, "per_device_train_batch_size": 4, "save_steps": 1, "report_to": [], "bf16": False}
    return load_config(None, data={
        "name": "tiny", "out": str(tmp_path / "runs"), "model": str(model_dir), "recipe": ["dpo-st", "step-dpo"],
        "iterations": 1, "use_solutions": True, "batch_size": 16, "seed": 1, "template": "gsm8k",
        "train_data": {"dataset": str(tmp_path / "train.jsonl")},
        "test_sets": {"tiny": {"dataset": str(tmp_path / "test.jsonl")},
                      "absent": {"dataset": str(tmp_path / "none.jsonl"), "optional": True}},
        "warmup_sft": {"overrides": {**train_fast, "max_steps": 80, "learning_rate": 3e-3, "lr_scheduler_type":
                                     "constant", "save_steps": 100}},
        "sample": {**sample, "n": 3}, "rft": {**sample, "n": 2, "pool": "all"},
        "dpo": {"overrides": train_fast}, "sft": {"restart": "continue", "overrides": train_fast},
        # n = 8: a question needs a right and a wrong sample; at n = 4 an Intel AMX machine's tiny
        # model solved none of its wrong ones (0 step pairs), at 8 seeds 1-4 gave 7-14 pairs there
        "step": {**sample, "n": 8, "template": "gsm8k", "overrides": train_fast,
                 "pairs": {"rollouts": 4, "rectify_n": 4, "max_new_tokens": 32, "temperature": 1.0}},
        "eval": {"max_new_tokens": 32}, "curriculum": {"enabled": True},
    })


def finished(root) -> set[str]:
    return {str(p.parent.relative_to(root)) for p in root.glob("**/DONE.json")}


@pytest.mark.slow  # ~90-150 s: 80 warm-up steps (40 left answers cut off), 15 stages on the tiny model
def test_loop_runs_every_stage_and_resumes_after_an_interruption(tmp_path, tiny_model_dir, monkeypatch):
    cfg = tiny_config(tmp_path, tiny_model_dir)
    root = tmp_path / "runs" / "tiny"
    real_sample = loop.sample_records
    calls = []

    def interrupted(records, *a, **kw):  # the DPO model's sampling dies after its first question
        calls.append(len(records))
        if len(calls) == 2:
            real_sample(records[:1], *a, **kw)
            raise KeyboardInterrupt
        return real_sample(records, *a, **kw)

    monkeypatch.setattr(loop, "sample_records", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop.run_loop(dict(cfg))
    first = finished(root)
    assert first == {"data", "iter_0/warmup_sft", "iter_0/eval_warmup_sft", "iter_1/sample", "iter_1/pairs",
                     "iter_1/dpo", "iter_1/eval_dpo"}
    assert len(read_jsonl(root / "iter_1/sample_dpo/samples.jsonl")) == 2  # one question, n=2

    # re-run: only the unfinished stages run, and sampling continues after the first question
    resumed_stats = []

    def spy(records, *a, **kw):
        stats = real_sample(records, *a, **kw)
        resumed_stats.append(stats)
        return stats

    monkeypatch.setattr(loop, "sample_records", spy)
    ran = []
    real_stage = loop.Run.stage
    monkeypatch.setattr(loop.Run, "stage", lambda self, rel, fn: (ran.append(rel), real_stage(self, rel, fn))[1]
                        if not (self.root / rel / loop.DONE).is_file() else real_stage(self, rel, fn))
    loop.run_loop(dict(cfg))
    expected = {f"iter_1/{s}" for s in DPO_ST + STEP}
    assert finished(root) == first | expected
    assert set(ran) == expected - first and not set(ran) & first
    assert resumed_stats[0]["questions_skipped"] == 1 and resumed_stats[0]["rows_written"] == 10

    # what each stage left behind
    done = {s: json.loads((root / s / "DONE.json").read_text()) for s in finished(root)}
    assert done["data"]["test_sets"] == {"tiny": 3}  # the optional missing set is skipped
    for s in ("iter_0/warmup_sft", "iter_1/dpo", "iter_1/sft"):
        assert done[s]["trained"] and (root / s / "model" / "config.json").is_file()
        assert not (root / s / "checkpoints").exists()
    assert done["iter_1/pairs"]["rows"] > 0 and done["iter_1/rft"]["rows"] > 0
    warm_acc = done["iter_0/eval_warmup_sft"]["results"]["tiny"]["accuracy"]
    assert warm_acc > 0  # the warm-up SFT really trained: the tiny model now answers "#### 5" and stops
    step_rows = read_jsonl(root / "iter_1/step_pairs/step.jsonl")
    assert step_rows and done["iter_1/step_dpo"]["trained"]
    assert {"prompt", "initial_reason_steps", "chosen", "rejected"} <= set(step_rows[0])
    assert done["iter_1/dpo"]["final_log"]["rewards/margins"] is not None
    # one load per model: the stages after a stage on the same model reuse its model and backend
    assert done["iter_1/sample"]["overheads"]["reused"]  # the warm-up model, loaded by iter_0/eval
    assert done["iter_1/step_sample"]["overheads"]["reused"] and done["iter_1/step_pairs"]["overheads"]["reused"]
    assert not done["iter_1/eval_sft"]["overheads"]["reused"] and done["iter_1/eval_sft"]["overheads"]["load_s"] > 0
    assert done["iter_1/dpo"]["overheads"]["train_loop_s"] > 0 and "convert_s" in done["data"]["overheads"]
    assert [r["id"] for r in read_jsonl(root / "iter_1/eval_sft/tiny/graded.jsonl")] == ["t0", "t1", "t2"]
    report = (root / "report.md").read_text()
    for name in ("accuracy.png", "pass_at_k.png", "pairs.png", "margins.png", "time.png"):
        assert (root / name).stat().st_size > 1000 and f"({name})" in report
    assert "it1:step_dpo" in report and "McNemar" in report
    assert "| iter_1 | 6 | 2 |" in report  # pseudo-labels: the DPO model's 2 samples against the first 2 of 3
    # stage by stage: each model against the evaluated model it trained from (sft continues from dpo)
    assert "| it1:dpo | it0:warmup_sft | tiny | 3 |" in report and "| it1:sft | it1:dpo | tiny | 3 |" in report
    assert "| it1:step_dpo | it1:sft | tiny | 3 |" in report
    for s in ("iter_0/warmup_sft", "iter_1/dpo", "iter_1/step_dpo"):  # the run's seed seeds training too
        assert yaml.safe_load((root / s / "train_config.yaml").read_text())["trl"]["seed"] == 1
    assert "| iter_1/step_pairs |" in report and "| reused |" in report  # the time table shows reuse

    # a third run with everything done trains nothing and only rebuilds the report
    ran.clear()
    loop.run_loop(dict(cfg))
    assert ran == []


def test_config_checks(tmp_path):
    with pytest.raises(UserError, match="train_data"):
        load_config(None, data={"name": "x"})
    base = {"train_data": {"synth": {"n": 5}}}
    with pytest.raises(UserError, match="unknown loop option 'dpo.bogus'"):
        load_config(None, ["dpo.bogus=1"], data=base)
    with pytest.raises(UserError, match="recipe"):
        load_config(None, ["recipe=grpo"], data=base)
    with pytest.raises(UserError, match="rft.pool"):
        load_config(None, ["rft.pool=some"], data=base)
    assert load_config(None, ["rft.pool=all"], data=base)["rft"]["pool"] == "all"
    cfg = load_config(None, ["recipe=dpo-st+step-dpo", "sample.n=8", "dpo.overrides.beta=0.2"], data=base)
    assert cfg["recipe"] == ["dpo-st", "step-dpo"] and cfg["sample"]["n"] == 8
    assert cfg["dpo"]["overrides"] == {"beta": 0.2} and cfg["dpo"]["k"] == 3
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train_data: {synth: {n: 3}}\nbogus: 1\n")
    assert main(["loop", str(yaml_file)]) == 2


def test_curriculum_orders_easy_first_and_filters():
    graded = [{"id": i, "correct": c} for i, cs in (("a", [0, 0]), ("b", [1, 1]), ("c", [1, 0])) for c in cs]
    cfg = {"curriculum": {"enabled": True, "min_pass": 0.0, "max_pass": 0.9}}
    order = loop.curriculum_order(cfg, graded)
    assert order == {"a": 0.0, "c": 0.5}
    rows = [{"id": "a", "k": 1}, {"id": "b", "k": 2}, {"id": "c", "k": 3}, {"id": "a", "k": 4}]
    assert [r["k"] for r in loop.apply_curriculum(rows, order)] == [3, 1, 4]
    assert loop.curriculum_order({"curriculum": {"enabled": False}}, graded) is None


def test_a_split_left_out_is_the_roles_own_and_overlap_is_reported(tmp_path, capsys):
    cfg = {"data_dir": None, "train_data": {"synth": {"n": 30}},
           "test_sets": {"held_out": {"synth": {"n": 10}},  # no split: the test split, never train's
                         "seen": {"synth": {"n": 10, "split": "train"}}}}
    stats = loop.make_data(cfg, tmp_path)
    assert stats["test_in_train"] == {"held_out": 0, "seen": 10}
    assert "test set seen: 10 of 10 questions are also in train_data" in capsys.readouterr().out
    train = {r["question"] for r in read_jsonl(tmp_path / "train.jsonl")}
    assert not train & {r["question"] for r in read_jsonl(tmp_path / "test" / "held_out.jsonl")}


def test_curriculum_keeps_pooled_rows_of_earlier_iterations():
    # iteration 2 samples only question b; pooled rows of a (iteration 1's window) keep a's rate from then
    earlier = [{"id": "a", "correct": c} for c in (1, 0)]
    now = [{"id": "b", "correct": c} for c in (0, 1)] + [{"id": "c", "correct": 0}, {"id": "c", "correct": 0}]
    cfg = {"curriculum": {"enabled": True, "min_pass": 0.0, "max_pass": 1.0}}
    assert loop.curriculum_order(cfg, now) == {"b": 0.5, "c": 0.0}  # this iteration alone: a's rows dropped
    order = loop.curriculum_order(cfg, now, earlier + now)
    assert order == {"a": 0.5, "b": 0.5, "c": 0.0}
    stale = [{"id": "b", "correct": 0}] * 2  # b's rate this iteration wins over an earlier one
    assert loop.curriculum_order(cfg, now, stale + now)["b"] == 0.5


def test_questions_window_and_which_solutions_stay():
    train = [{"id": str(i), "question": f"q{i}", "gold": "1", "solution": "s"} for i in range(10)]
    cfg = load_config(None, ["warmup_sft.limit=3", "sample.questions=4", "sample.start=2"],
                      data={"train_data": {"synth": {"n": 5}}})
    first = loop._questions(cfg, train, 1)
    assert [r["id"] for r in first] == ["2", "3", "4", "5"]
    assert [("solution" in r) for r in first] == [True, False, False, False]  # only warm-up's labelled
    assert [r["id"] for r in loop._questions(cfg, train, 3)] == ["0", "1", "2", "3"]  # wraps around
    cfg["use_solutions"] = False
    assert not any("solution" in r for r in loop._questions(cfg, train, 1))


def test_stage_order_is_the_runs_own_and_old_eval_folders_are_adopted(tmp_path):
    import os

    from mathpo import report

    run = loop.Run({"out": str(tmp_path), "name": "r"})
    (run.root / "iter_0" / "eval").mkdir(parents=True)  # a warm-up eval written by an older mathpo
    (run.root / "iter_0" / "eval" / loop.DONE).write_text(json.dumps({"results": {}, "seconds": 1}))
    for rel in ("data", "iter_1/sample", "iter_1/pairs"):
        run.stage(rel, lambda d: {"rows": 1})
    adopted = run.stage("iter_0/eval_warmup_sft", lambda d: pytest.fail("a finished eval must not rerun"))
    assert adopted["results"] == {} and (run.root / "iter_0/eval_warmup_sft" / loop.DONE).is_file()
    assert not (run.root / "iter_0" / "eval").exists()
    # modification times say the opposite order; the report follows the run's own
    for i, rel in enumerate(("iter_1/pairs", "iter_1/sample", "data")):
        os.utime(run.root / rel / loop.DONE, (1000 + i, 1000 + i))
    assert [s for s, _ in report.stages(run.root)] == ["data", "iter_1/sample", "iter_1/pairs",
                                                       "iter_0/eval_warmup_sft"]
    assert report.label("iter_0/eval_warmup_sft") == "it0:warmup_sft"
    assert report.label("iter_2/eval_step_dpo") == "it2:step_dpo"
    # a fresh Run over the same folder keeps the recorded order
    assert loop.Run({"out": str(tmp_path), "name": "r"}).order[:3] == ["data", "iter_1/sample", "iter_1/pairs"]


def test_backend_cache_keeps_one_model_until_it_changes(tiny_model_dir, tmp_path):
    import shutil

    from mathpo.sampling import BackendSettings
    from mathpo.sampling.reuse import BackendCache

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    held = BackendCache(BackendSettings(batch_size=4, kv_gb=0.01))
    loaded, backend, cost = held.get(str(tiny_model_dir), "gsm8k")
    assert not cost["reused"] and cost["load_s"] > 0
    again, backend2, cost2 = held.get(str(tiny_model_dir), "gsm8k")
    assert again is loaded and backend2 is backend and cost2 == {"load_s": 0.0, "backend_s": 0.0, "reused": True}
    loaded3, backend3, cost3 = held.get(str(other), "gsm8k")  # another model: the first one is dropped
    assert loaded3 is not loaded and backend3 is not backend and not cost3["reused"]
    held.release()
    assert held.loaded is None and held.backend is None
