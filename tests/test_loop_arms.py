"""`arms:` in a loop config and the `st` recipe on a tiny model: every arm from the same warm-up
model, stages two arms share run once, a killed arms run resumes, the arms table's statistics."""

from __future__ import annotations

import json

import pytest

from mathpo import loop, loop_arms
from mathpo.records import read_json, write_json, write_jsonl
from mathpo.report_arms import arms_table

ARMS = {"st": ["st"], "dpo-st": ["dpo-st"], "full": ["dpo-st", "step-dpo"]}


def test_plan_shares_the_steps_arms_have_in_common():
    plan = loop_arms.plan(ARMS, 2)
    assert plan["st"] == [(1, "st", "st/iter_1"), (2, "st", "st/iter_2")]
    assert plan["dpo-st"] == [(1, "dpo-st", "dpo-st/iter_1"), (2, "dpo-st", "dpo-st/iter_2")]
    # full's first step is dpo-st's (same model, same questions): stored once, in dpo-st's folder;
    # from then on full's models differ, so its later steps are its own
    assert plan["full"] == [(1, "dpo-st", "dpo-st/iter_1"), (1, "step-dpo", "full/iter_1"),
                            (2, "dpo-st", "full/iter_2"), (2, "step-dpo", "full/iter_2")]


def _fake_eval(root, rel, correct: list[int]):
    write_jsonl(root / rel / "t" / "graded.jsonl", [{"id": f"q{i}", "correct": bool(c)} for i, c in enumerate(correct)])
    write_json(root / rel / "DONE.json", {"results": {}, "model": rel})


def test_arms_table_statistics_match_a_hand_computed_case(tmp_path):
    root = tmp_path
    write_jsonl(root / "data" / "test" / "t.jsonl", [])
    _fake_eval(root, "iter_0/eval_warmup_sft", [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    _fake_eval(root, "st/iter_1/eval_st", [1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    _fake_eval(root, "dpo-st/iter_1/eval_sft", [1, 1, 1, 1, 1, 1, 0, 1, 1, 1])
    write_json(root / "st/iter_1/st_sample/DONE.json", {"samples": 60, "questions": 10})
    write_json(root / "dpo-st/iter_1/sample/DONE.json", {"samples": 40, "questions": 10})
    write_json(root / "dpo-st/iter_1/sample_dpo/DONE.json", {"samples": 20, "questions": 10})
    write_json(root / "arms.json", {
        "st": {"recipes": ["st"], "steps": [[1, "st", "st/iter_1"]], "final_eval": "st/iter_1/eval_st"},
        "dpo-st": {"recipes": ["dpo-st"], "steps": [[1, "dpo-st", "dpo-st/iter_1"]],
                   "final_eval": "dpo-st/iter_1/eval_sft"}})
    text, comps = arms_table(root)
    # Wilson 95%, z = 1.96: 7/10 -> centre (0.7 + z²/20) / (1 + z²/10) = 0.6445, half-width
    # z·sqrt(0.7·0.3/10 + z²/400) / (1 + z²/10) = 0.2477 -> [39.7, 89.2]; 9/10 -> [59.6, 98.2]
    assert "| st | st | t | 10 | 70.0% | [39.7, 89.2] | 6.0 | 0 |" in text
    assert "| dpo-st | dpo-st | t | 10 | 90.0% | [59.6, 98.2] | 6.0 | 0 |" in text  # equal budget: 4 + 2
    c = next(c for c in comps if (c["a"], c["b"]) == ("st", "dpo-st"))
    # dpo-st - st per question: +1 on q7, q8, q9, -1 on q6, 0 elsewhere: mean 0.2; sample sd
    # sqrt((3·0.8² + 1.2² + 6·0.2²) / 9) = sqrt(0.4); se = sqrt(0.4 / 10) = 0.2; 0.2 ± 1.96·0.2
    assert c["n"] == 10 and c["gained"] == 3 and c["lost"] == 1
    assert c["diff"] == pytest.approx(0.2) and c["ci95"] == pytest.approx([-0.192, 0.592])
    # exact McNemar: 4 discordant questions, 1 the rarer way: 2·(C(4,0) + C(4,1)) / 2⁴ = 0.625
    assert c["mcnemar_p"] == pytest.approx(0.625)
    assert "| dpo-st - st | t | 10 | +20.0 [-19.2, +59.2] | 3/1 | 0.625 |" in text
    w = next(c for c in comps if (c["a"], c["b"]) == ("warm-up", "st"))
    assert (w["gained"], w["lost"], w["mcnemar_p"]) == (2, 0, 0.5)  # 2·C(2,0)/2² = 0.5


@pytest.mark.slow  # a few minutes: warm-up, three arms (st, dpo-st, dpo-st + step-dpo), run twice
def test_arms_run_once_per_shared_stage_and_resume_after_a_kill(tmp_path, tiny_model_dir, monkeypatch):
    from test_loop import finished, tiny_config

    cfg = tiny_config(tmp_path, tiny_model_dir)
    cfg.update(arms=ARMS)
    cfg["eval"]["after"] = ["warmup_sft"]  # the arms' final models are evaluated anyway
    root = tmp_path / "runs" / "tiny"
    real_sample, calls = loop.sample_records, []

    def killed(records, *a, **kw):  # st_sample, sample, sample_dpo, then full's step_sample dies
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_sample(records, *a, **kw)

    ran = []
    real_stage = loop.Run.stage
    monkeypatch.setattr(loop.Run, "stage", lambda self, rel, fn: (ran.append(rel), real_stage(self, rel, fn))[1]
                        if not (self.root / rel / loop.DONE).is_file() else real_stage(self, rel, fn))
    monkeypatch.setattr(loop, "sample_records", killed)
    with pytest.raises(KeyboardInterrupt):
        loop.run_loop(dict(cfg))
    assert "full/iter_1/step_sample" not in finished(root) and "dpo-st/iter_1/eval_sft" in finished(root)
    monkeypatch.setattr(loop, "sample_records", real_sample)
    loop.run_loop(dict(cfg))

    st = {f"st/iter_1/{s}" for s in ("st_sample", "st_rft", "st_sft", "eval_st")}
    dpo = {f"dpo-st/iter_1/{s}" for s in ("sample", "pairs", "dpo", "sample_dpo", "rft", "sft", "eval_sft")}
    step = {f"full/iter_1/{s}" for s in ("step_sample", "step_pairs", "step_dpo", "eval_step_dpo")}
    expected = {"data", "iter_0/warmup_sft", "iter_0/eval_warmup_sft"} | st | dpo | step
    assert finished(root) == expected
    # every stage ran exactly once over both processes (the killed one redone), shared ones included
    assert sorted(set(ran)) == sorted(expected) and len(ran) == len(expected) + 1
    assert ran.count("full/iter_1/step_sample") == 2

    arms = read_json(root / "arms.json")
    assert arms["dpo-st"]["final_eval"] == "dpo-st/iter_1/eval_sft"
    assert arms["full"]["final_eval"] == "full/iter_1/eval_step_dpo" and arms["st"]["final_eval"] == "st/iter_1/eval_st"
    # st: one sampling stage of sample.n + rft.n = 3 + 2 per question, as DPO-ST's two (3, then 2)
    st_done = read_json(root / "st/iter_1/st_sample/DONE.json")
    assert st_done["samples"] == 5 * st_done["questions"]
    assert read_json(root / "st/iter_1/st_sft/DONE.json")["trained"]
    same = {json.dumps(sorted(json.loads(line)["id"] for line in (root / a / "tiny" / "graded.jsonl").open()))
            for a in (arms[x]["final_eval"] for x in ARMS)}
    assert len(same) == 1  # all arms on the same test questions
    report = (root / "report.md").read_text()
    assert "## Arms" in report and "(arms.png)" in report and (root / "arms.png").stat().st_size > 1000
    for line in ("| st | st | tiny | 3 |", "| full | dpo-st + step-dpo | tiny | 3 |", "| dpo-st - st | tiny | 3 |"):
        assert line in report
    assert "| st | st | tiny | 3 |" in report and "5.0 |" in report


def test_seed_to_seed_spread_across_two_runs(tmp_path):
    from mathpo.report_arms import seeds_table

    for seed, correct in ((0, [1, 1, 1, 0]), (1, [1, 0, 0, 0])):
        root = tmp_path / f"s{seed}"
        write_json(root / "config.json", {"seed": seed})
        write_jsonl(root / "data" / "test" / "t.jsonl", [])
        _fake_eval(root, "st/iter_1/eval_st", correct)
        _fake_eval(root, "dpo-st/iter_1/eval_sft", [1, 1, 1, 1])
        write_json(root / "arms.json", {
            "st": {"recipes": ["st"], "steps": [], "final_eval": "st/iter_1/eval_st"},
            "dpo-st": {"recipes": ["dpo-st"], "steps": [], "final_eval": "dpo-st/iter_1/eval_sft"}})
    text = seeds_table([tmp_path / "s0", tmp_path / "s1"])
    assert "| st | t | 75.0% | 25.0% | 50.0 |" in text and "| dpo-st | t | 100.0% | 100.0% | 0.0 |" in text
    assert "| dpo-st - st | t | +25.0 [" in text and "| +75.0 [" in text
    # pooled: st's per-question means 1, .5, .5, 0 against 1s: differences 0, .5, .5, 1, mean .5, sd .408;
    # across seeds: +25 and +75, mean 50, sd 35.36, t(1) = 12.706: 50 +- 12.706 * 35.36 / sqrt(2)
    row = next(line for line in text.splitlines() if line.startswith("| dpo-st - st | t |"))
    assert row.endswith("| +50.0 [+10.0, +90.0] | +50.0 [-267.6, +367.6] |")


def test_across_seeds_is_a_t_interval_over_the_seeds():
    from mathpo.report_arms import across_seeds

    # DPO-ST - ST on synth in the session-6/7 ablation: +2.0, +7.4, +5.2 (mean 4.87, sd 2.715, t(2) 4.303)
    got = across_seeds([0.020, 0.074, 0.052])
    assert got["seeds"] == 3 and abs(got["diff"] - 0.04867) < 1e-4
    assert abs(got["ci95"][0] - (-0.0188)) < 1e-4 and abs(got["ci95"][1] - 0.1161) < 1e-4
    assert across_seeds([0.05]) is None  # one seed has no spread to show
    wide, many = across_seeds([0.0, 0.1]), across_seeds([0.0, 0.1] * 20)  # more seeds, the t shrinks to z
    assert wide["ci95"][1] - wide["ci95"][0] > 10 * (many["ci95"][1] - many["ci95"][0])


def test_seeds_table_pairs_each_stage_with_its_start_model_per_seed_and_pooled(tmp_path):
    """Step-DPO against the model it trained from, per seed and pooled: the seeds table's last section."""
    from mathpo.report_arms import seeds_table

    for seed, before, after in ((0, [1, 0, 0, 0], [1, 1, 0, 0]), (1, [1, 1, 0, 0], [1, 1, 1, 1])):
        root = tmp_path / f"s{seed}"
        write_json(root / "config.json", {"seed": seed})
        write_jsonl(root / "data" / "test" / "t.jsonl", [])
        write_json(root / "arms.json", {"full": {"recipes": ["step-dpo"], "steps": [],
                                                 "final_eval": "full/iter_2/eval_step_dpo"}})
        for rel, model, marks in (("full/iter_2/eval_sft", "full/iter_2/sft/model", before),
                                  ("full/iter_2/eval_step_dpo", "full/iter_2/step_dpo/model", after)):
            write_jsonl(root / rel / "t" / "graded.jsonl",
                        [{"id": f"q{i}", "correct": bool(c)} for i, c in enumerate(marks)])
            write_json(root / rel / "DONE.json", {"results": {"t": {}}, "model": str(root / model)})
        (root / "full/iter_2/step_dpo").mkdir(parents=True)
        (root / "full/iter_2/step_dpo/train_config.yaml").write_text(f"model: {root / 'full/iter_2/sft/model'}\n")
    text = seeds_table([tmp_path / "s0", tmp_path / "s1"])
    row = next(line for line in text.splitlines() if line.startswith("| full/it2:step_dpo | full/it2:sft | t |"))
    # seed 0 gains q1 (+25), seed 1 gains q2 and q3 (+50); pooled per-question differences 0, .5, .5, .5:
    # mean .375, sd .25, interval .375 +- 1.96 * .125; across seeds +25 and +50: 37.5 +- 12.706 * 12.5
    assert row.startswith("| full/it2:step_dpo | full/it2:sft | t | +25.0 [") and "| +50.0 [" in row
    assert row.endswith("| +37.5 [+13.0, +62.0] | +37.5 [-121.3, +196.3] |")
