"""Cut-off final answers are never correct (grading.truncation), are counted apart (`truncated`), and
never become a positive of DPO pairs or RFT sets. Completions below are written the way SmolLM2-135M
writes them when it runs out of tokens or loops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathpo.grading import grade, grade_rows
from mathpo.grading.metrics import summarize
from mathpo.grading.truncation import cut_off, looping
from mathpo.pairs import dpo, rft

# (completion, gold, finish, expected truncated reason); every one of them is graded wrong
CUT = [
    # an unclosed \boxed{ at the end: the flexible fallback used to take the last number
    ("The total is 12 + 13 = 25.\nSo the answer is $\\boxed{25", "25", "length", "unbalanced"),
    ("We get $x = \\frac{1}{2}$, hence the answer is $\\boxed{\\frac{1}{2", "\\frac{1}{2}", "length", "unbalanced"),
    ("First \\boxed{3} was wrong. Recomputing: 2 + 3 = 5, so \\boxed{5", "5", None, "unbalanced"),
    ("The final answer is \\frac{3}{4", "\\frac{3}{4}", "stop", "unbalanced"),
    ("#### \\frac{1}{2", "\\frac{1}{2}", None, "unbalanced"),
    # a degenerate run of openings, and loops, whatever they end on
    ("So the answer is " + "\\boxed{" * 40 + "5", "5", "length", "unbalanced"),
    ("Tom has 5 apples.\n" + "#### 5\n" * 30, "5", "length", "repetition"),
    ("She needs 5 cups. " + "5 cups. " * 20, "5", "length", "repetition"),
    ("2 + 3 = 5. " + "5" * 60, "5", "stop", "repetition"),
    ("He has 2 + 3 = <<2+3=5>>5 apples.\n" + "He has 5 apples.\n" * 12, "5", "length", "repetition"),
    # stopped at the token limit with the last marker still open, or before any marker
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = <<9*2=18>>18 dollars.\n#### 1", "1",
     "length", "length"),
    ("15 + 25 = <<15+25=40>>40 cups of feed.\nShe needs 40 - 20 = <<40-20=20>>20 cups.\nThe answer is 2", "2",
     "length", "length"),
    ("15 + 25 = <<15+25=30>>30 cups of feed.\nShe needs 30 - 15 = <<30-15=15>>15 cups of feed.\nShe needs 4", "4",
     "length", "length"),
    ("Let's think step by step.\nStep 1: 3 + 5 = 8 classes.\nStep 2: 8 * 2 = 16", "16", "length", "length"),
]

# (completion, gold, finish, correct, strict): whole answers keep their verdicts
WHOLE = [
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = <<9*2=18>>18 dollars.\n#### 18", "18",
     "stop", True, True),
    ("So the answer is $\\boxed{25}$.", "25", "length", True, True),  # box closed: a loop after it is no matter
    ("#### 18\n\nQuestion: Tom has 3 apples and buys 40 more. How many apples does he", "18", "length", True, True),
    ("The answer is 12.\nI hope", "12", "length", True, True),
    ("3 + 4 = 7 and then 7 * 2 = 14 so she has 14.", "14", "stop", True, False),
    ("3 + 4 = 7 and then 7 * 2 = 14 so she has 14.", "14", None, True, False),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", None, True, True),
    ("The answer is 1000000.", "1000000", None, True, True),
    ("x = 0, 0, 0 so \\boxed{(0, 0, 0)}", "(0,0,0)", "stop", True, True),
]


@pytest.mark.parametrize("completion,gold,finish,reason", CUT, ids=range(len(CUT)))
def test_cut_off_is_never_correct(completion, gold, finish, reason):
    g = grade(completion, gold, finish=finish)
    assert g["truncated"] == reason
    assert g["correct"] is False and g["strict_correct"] is False
    [row] = grade_rows([{"id": "q", "completion": completion, "gold": gold, "finish": finish}])
    assert (row["truncated"], row["correct"], row["strict_correct"]) == (reason, False, False)


@pytest.mark.parametrize("completion,gold,finish,correct,strict", WHOLE, ids=range(len(WHOLE)))
def test_whole_answers_keep_their_verdict(completion, gold, finish, correct, strict):
    g = grade(completion, gold, finish=finish)
    assert (g["truncated"], g["correct"], g["strict_correct"]) == (None, correct, strict)


def test_looping_needs_a_real_loop():
    assert looping("ab" * 30) and looping("x" * 48) and not looping("x" * 47)
    assert not looping("He has 5 apples.\n" * 3)  # a repeated closing line is not a loop
    assert not looping("1" * 20) and not looping("")
    assert cut_off("5 " * 10, "5") is None


def test_real_outputs_verdicts_unchanged():
    """On the 252 hand-read real outputs (no `finish` recorded there) the check flags only loops, all of
    which a reader already graded wrong: no verdict changes."""
    rows = [json.loads(line) for line in
            (Path(__file__).parent / "fixtures" / "real_outputs.jsonl").read_text().splitlines() if line.strip()]
    flagged = [(r, grade(r["completion"], r["gold"])) for r in rows]
    flagged = [(r, g) for r, g in flagged if g["truncated"]]
    assert len(flagged) == 18
    assert {g["truncated"] for _, g in flagged} == {"repetition"}
    assert not any(r["expected_correct"] for r, _ in flagged)


def test_summary_counts_truncated():
    rows = grade_rows([{"id": "a", "sample": 0, "completion": "#### 5", "gold": "5", "finish": "stop"},
                       {"id": "a", "sample": 1, "completion": "so \\boxed{5", "gold": "5", "finish": "length"},
                       {"id": "b", "sample": 0, "completion": "5 apples. " * 10, "gold": "5"},
                       {"id": "b", "sample": 1, "completion": "#### 4", "gold": "5"}])
    s = summarize(rows)
    assert s["truncated"] == 2 and s["accuracy"] == 0.25


def _row(qid, k, completion, correct, finish="stop"):
    return {"id": qid, "sample": k, "question": f"question {qid}?", "gold": "5", "prompt": f"Question: {qid}\nAnswer:",
            "completion": completion, "correct": correct, "finish": finish}


def test_pairs_and_rft_never_take_a_cut_off_positive():
    # graded elsewhere (or by an older grader): `correct` is true but the answer is cut off
    rows = [_row("q1", 0, " 2 + 3 = 5 apples.\n#### 5", True),
            _row("q1", 1, " 2 + 3 = 5, so \\boxed{5", True, "length"),
            _row("q1", 2, " 2 + 3 = 5. " + "5 apples. " * 12, True, "length"),
            _row("q1", 3, " 2 + 2 = 4 apples.\n#### 4", False),
            _row("q2", 0, " He has 2 + 3 = 5 then 5", True, "length"),
            _row("q2", 1, " 2 * 3 = 6 apples.\n#### 6", False)]
    pairs, stats = dpo.build(rows, None, "gsm8k")
    assert {p["chosen"] for p in pairs} == {rows[0]["completion"]}
    assert all(p["id"] == "q1" for p in pairs) and stats["skipped"] == {"no_correct": 1}
    assert stats["truncated_positives"] == 3
    sft, rstats = rft.build(rows, None, "gsm8k")
    assert [r["completion"] for r in sft] == [rows[0]["completion"]] and rstats["truncated_positives"] == 3
