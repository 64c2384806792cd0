"""DPO-ST pairs and RFT sets on hand-written graded rows: exact expected output."""

import pytest

from mathpo import prompts
from mathpo.errors import UserError
from mathpo.pairs import dpo, rft
from mathpo.pairs.pool import reference_completion
from mathpo.pairs.similarity import dedup, jaccard, token_set

T = "gsm8k"  # plain template: renders without a tokenizer


def P(q):
    return prompts.render(None, q, T)


def row(qid, k, completion, correct, question=None, solution=None, gold="9", prompt=None):
    q = question or f"question {qid}?"
    r = {"id": qid, "sample": k, "question": q, "gold": gold, "prompt": prompt or P(q),
         "completion": completion, "correct": correct, "pred": None}
    if solution:
        r["solution"] = solution
    return r


REF = "Janet has 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n#### 9"
REF_ANS = " " + REF  # as a gsm8k answer: after "Answer:" the model writes the space itself
S0 = "16 - 3 - 4 = 9 eggs. #### 9"
S2 = "16 - 3 - 4 = 9 eggs left. #### 9"  # near duplicate of S0 (Jaccard 0.9)
S3 = "16 + 3 + 4 = 23 eggs. #### 23"
S4 = "She has 16 eggs and sells them all for $2 each, so 32. #### 32"
Q2 = ["7 * 2 = 14. #### 14", "Two sevens make 14.\n#### 14", "We double seven: 14 #### 14"]

ROUND1 = [row("q1", 0, S0, True, solution=REF), row("q1", 1, S3, False, solution=REF),
          row("q2", 0, Q2[0], True, gold="14"), row("q2", 1, Q2[1], True, gold="14"),
          row("q3", 0, "no idea #### 5", False, gold="7"),
          row("q4", 0, "3 + 3 = 6 #### 6", False, solution="3 * 3 = <<3*3=9>>9\n#### 9")]
ROUND2 = [row("q1", 0, S0, True, solution=REF), row("q1", 1, S2, True, solution=REF),
          row("q1", 2, S4, False, solution=REF), row("q2", 0, Q2[2], True, gold="14"),
          row("q3", 1, "still no idea #### 6", False, gold="7")]


def test_jaccard_and_dedup():
    assert token_set("16-3=13") == token_set("16 - 3 = 13")
    assert jaccard(token_set(S0), token_set(S2)) == pytest.approx(0.9)
    assert jaccard(token_set(""), token_set("")) == 1.0
    kept, exact, near = dedup([S0, S0 + "  ", S2, S3], 0.7)
    assert (kept, exact, near) == ([0, 3], 1, 1)


def test_dpo_pairs_exact_and_pooled():
    rows, stats = dpo.build(ROUND1 + ROUND2, None, T, k=3, threshold=0.7)
    got = [(r["id"], r["chosen"], r["rejected"]) for r in rows]
    # q1: positives [REF, S0] (S0 twice, S2 near-dup), negatives [S3, S4]; similarities
    # S0/S4 0.18 < REF/S4 0.20 < REF/S3 0.47 < S0/S3 0.64 -> the 3 least similar
    assert got == [("q1", S0, S4), ("q1", REF_ANS, S4), ("q1", REF_ANS, S3),
                   ("q4", " 3 * 3 = <<3*3=9>>9\n#### 9", "3 + 3 = 6 #### 6")]
    assert all(r["prompt"] == P(f"question {r['id']}?") for r in rows)
    assert set(rows[0]) == {"prompt", "chosen", "rejected", "id"}
    assert stats["questions"] == 4 and stats["rows"] == 4
    assert stats["skipped"] == {"no_correct": 1, "no_wrong": 1}
    assert stats["per_question"] == {"0": 2, "1": 1, "3": 1}
    assert stats["exact_duplicates"] == 1 and stats["near_duplicates"] == 1


def test_dpo_k_and_threshold():
    rows, _ = dpo.build(ROUND1 + ROUND2, None, T, k=1)
    assert [(r["id"], r["chosen"], r["rejected"]) for r in rows] == [
        ("q1", S0, S4), ("q4", rows[1]["chosen"], rows[1]["rejected"])]
    rows, stats = dpo.build(ROUND1 + ROUND2, None, T, k=10, threshold=0.95)  # S2 now kept
    assert sum(r["id"] == "q1" for r in rows) == 6 and stats["near_duplicates"] == 0


def test_rows_under_another_prompt_are_set_aside():
    odd = row("q1", 5, "a different answer entirely #### 1", False, solution=REF,
              prompt="FEWSHOT...\n" + P("question q1?"))
    rows, stats = dpo.build(ROUND1 + [odd], None, T)
    assert all(r["rejected"] != odd["completion"] for r in rows)
    assert stats["rows_other_prompt"] == 1


def test_rft_set_exact_with_cap():
    rows, stats = rft.build(ROUND1 + ROUND2, None, T, threshold=0.7, cap_percentile=90)
    # solutions per question: q1 2 (REF, S0), q2 3, q4 1 -> p90 of [1, 2, 3] = 2.8 -> cap 2
    assert stats["cap"] == 2 and stats["dropped_by_cap"] == 1
    assert [(r["id"], r["completion"]) for r in rows] == [
        ("q1", REF_ANS), ("q1", S0), ("q2", Q2[0]), ("q2", Q2[1]), ("q4", " 3 * 3 = <<3*3=9>>9\n#### 9")]
    assert set(rows[0]) == {"prompt", "completion", "id"}
    assert stats["skipped"] == {"no_correct": 1}
    rows, stats = rft.build(ROUND1 + ROUND2, None, T, cap_percentile=100)
    assert stats["cap"] == 3 and len(rows) == 6


def test_reference_written_in_the_template_format():
    sol = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
           "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
    assert reference_completion(sol, "72", "gsm8k") == " " + sol
    assert reference_completion(sol, "72", "chat-step") == (
        " Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Step 2: Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
        "The final answer is $\\boxed{72}$.")
    assert reference_completion(sol, "72", "chat-boxed").endswith("April and May.\nThe final answer is $\\boxed{72}$.")
    math_sol = "We have $x = 2$, so $x^2 = \\boxed{4}$."
    assert reference_completion(math_sol, "4", "chat-boxed") == math_sol
    assert reference_completion(math_sol, "4", "gsm8k") == " " + math_sol + "\n#### 4"


def test_reference_prompt_rendered_when_rows_have_none(tokenizer):
    rows = [{k: v for k, v in r.items() if k != "prompt"} for r in ROUND1]
    out, _ = dpo.build(rows, tokenizer, "chat-boxed")
    assert out[0]["prompt"] == prompts.render(tokenizer, "question q1?", "chat-boxed")
    # the rows name no template and their samples answer `#### N`: the reference does too
    assert out[0]["chosen"].endswith("\n#### 9") and "boxed" not in out[0]["chosen"]


def test_ungraded_rows_rejected():
    bad = [{"id": "a", "question": "q", "completion": "x"}]
    with pytest.raises(UserError, match="correct"):
        dpo.build(bad, None, T)
