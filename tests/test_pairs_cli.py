"""`mathpo pairs` end to end: dpo/rft files, step pairs with a tiny model, one real-model run."""

import json

import pytest

from conftest import DATA, needs_data
from mathpo.cli import main
from mathpo.records import read_jsonl, write_jsonl
from test_pairs_dpo_rft import ROUND1, ROUND2


def test_dpo_and_rft_commands_pool_inputs(tmp_path, capsys):
    a, b = tmp_path / "it1.jsonl", tmp_path / "it2.jsonl"
    write_jsonl(a, ROUND1)
    write_jsonl(b, ROUND2)
    out = tmp_path / "dpo.jsonl"
    assert main(["pairs", "--kind", "dpo", "--input", str(a), "--input", str(b), "--output", str(out),
                 "--template", "gsm8k"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 4 and {r["id"] for r in rows} == {"q1", "q4"}
    summary = json.loads((tmp_path / "dpo.summary.json").read_text())
    assert summary["skipped"] == {"no_correct": 1, "no_wrong": 1} and summary["inputs"] == [str(a), str(b)]
    printed = capsys.readouterr().out
    assert "dpo rows: 4 from 4 questions" in printed and "skipped: no_correct 1, no_wrong 1" in printed
    assert main(["pairs", "--kind", "rft", "--input", str(a), "--input", str(b),
                 "--output", str(tmp_path / "rft.jsonl"),
                 "--template", "gsm8k", "cap_percentile=100"]) == 0
    assert len(read_jsonl(tmp_path / "rft.jsonl")) == 6


def test_pairs_user_errors(tmp_path, capsys):
    ungraded = tmp_path / "s.jsonl"
    write_jsonl(ungraded, [{"id": "1", "question": "q", "completion": "c"}])
    assert main(["pairs", "--kind", "dpo", "--input", str(ungraded), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "mathpo grade" in capsys.readouterr().err
    assert main(["pairs", "--kind", "dpo", "--input", str(tmp_path / "none.jsonl"), "--output", "o"]) == 2
    g = tmp_path / "g.jsonl"
    write_jsonl(g, ROUND1)
    assert main(["pairs", "--kind", "step", "--input", str(g), "--output", str(tmp_path / "o.jsonl"),
                 "--template", "gsm8k"]) == 2
    assert "--model" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_step_command_with_tiny_model(tmp_path, tiny_model_dir, capsys):
    """A random model never reaches the gold answer, so every error lands on step 1 and the
    question's own correct sample supplies the chosen step."""
    base = {"id": "q1", "question": "Janet has 16 eggs and eats 7. How many are left?", "gold": "9",
            "model": str(tiny_model_dir), "template": "chat-step"}
    from mathpo import models, prompts

    tok = models.load_tokenizer(str(tiny_model_dir))
    base["prompt"] = prompts.render(tok, base["question"], "chat-step")
    rows = [{**base, "sample": 0, "completion": " 16 + 7 = 23.\nStep 2: So \\boxed{23}.", "correct": False},
            {**base, "sample": 1, "completion": " 16 - 7 = 9.\nStep 2: So \\boxed{9}.", "correct": True}]
    g = tmp_path / "graded.jsonl"
    write_jsonl(g, rows)
    out = tmp_path / "step.jsonl"
    assert main(["pairs", "--kind", "step", "--input", str(g), "--output", str(out), "--rollouts", "2",
                 "--chunk", "2", "--max-new-tokens", "8", "--dataset-name", "toy"]) == 0
    (row,) = read_jsonl(out)
    assert row["chosen"] == " 16 - 7 = 9.\n" and row["rejected"] == " 16 + 7 = 23.\n"
    assert row["initial_reason_steps"] == "Let's think step by step.\nStep 1:" and row["dataset"] == "toy"
    summary = json.loads((tmp_path / "step.summary.json").read_text())
    assert summary["locate"]["rollouts"] == 2 and summary["locate"]["error_step"] == {"1": 1}
    assert "error at step: 1: 1" in capsys.readouterr().out


@pytest.mark.real_model
@needs_data("gsm8k/test.jsonl")
def test_step_pairs_on_real_model(tmp_path, capsys):
    """Sample, grade and build step pairs with SmolLM2-135M on a few GSM8K questions."""
    run = tmp_path / "s"
    assert main(["sample", "--dataset", "gsm8k", "--split", "test", "--limit", "2", "--data-dir", str(DATA),
                 "--template", "chat-step", "--out", str(run), "n=2", "temperature=0.8", "max_new_tokens=48"]) == 0
    assert main(["grade", str(run / "samples.jsonl"), "--output", str(run / "graded.jsonl")]) == 0
    graded = read_jsonl(run / "graded.jsonl")
    # give the first question one correct sample (the gold solution written as steps) so the
    # locator has a solvable question even where the 135M model solves none
    from mathpo.pairs.pool import reference_completion

    first = graded[0]
    right = reference_completion(first["solution"], first["gold"], "chat-step")
    graded.append({**first, "sample": 99, "completion": right, "correct": True})
    # and one complete wrong solution (its last step states a wrong answer): at 48 new tokens the
    # model's own samples are mostly cut off, and a cut-off one may have no wrong step to locate
    wrong = right[:right.rindex("boxed{")] + f"boxed{{{int(first['gold']) + 1}}}$."
    graded.append({**first, "sample": 98, "completion": wrong, "correct": False, "truncated": None})
    write_jsonl(run / "graded.jsonl", graded)
    out = tmp_path / "step.jsonl"
    assert main(["pairs", "--kind", "step", "--input", str(run / "graded.jsonl"), "--output", str(out),
                 "--rollouts", "2", "--chunk", "2", "--rectify-n", "2", "--max-new-tokens", "48",
                 "--max-per-question", "1"]) == 0
    summary = json.loads((tmp_path / "step.summary.json").read_text())
    located = summary["locate"]["located"]
    skipped = sum(v for k, v in summary["skipped"].items() if k not in ("no_fix_found", "over_max_per_question"))
    assert located + skipped == summary["wrong_solutions"] >= 1
    rows = read_jsonl(out)
    for r in rows:  # each row continues the wrong solution's own text and replaces one step
        assert r["initial_reason_steps"].startswith("Let's think step by step.\nStep 1:")
        assert r["full_rejected"].startswith(r["rejected"]) and r["chosen"].strip() != r["rejected"].strip()
    assert "rollouts:" in capsys.readouterr().out
