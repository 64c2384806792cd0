"""grading.metrics: unbiased pass@k, maj@k over equivalence classes, summaries; and `mathpo grade`."""

from __future__ import annotations

import json
from itertools import combinations

import pytest

from mathpo.grading.metrics import answer_classes, group, majority, majority_class, pass_at_k, pass_rates, summarize


# by hand: 1 - C(n-c, k) / C(n, k); e.g. (10, 3, 5): 1 - 21/252 = 11/12; (20, 7, 4): 1 - 715/4845 = 826/969
@pytest.mark.parametrize("n,c,k,expected", [(10, 3, 1, 0.3), (10, 3, 5, 11 / 12), (5, 0, 3, 0.0), (5, 5, 1, 1.0),
                                            (8, 1, 8, 1.0), (20, 7, 4, 826 / 969), (4, 2, 2, 5 / 6)])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize("n,c", [(4, 1), (6, 2), (7, 3), (5, 5), (6, 0)])
def test_pass_at_k_is_the_share_of_k_subsets_holding_a_correct_sample(n, c):
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_edge_cases():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(4, 0, 4) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def _rows(qid, preds, correct):
    return [{"id": qid, "sample": i, "pred": p, "correct": c, "strict_correct": c} for i, (p, c) in
            enumerate(zip(preds, correct))]


def test_majority_votes_over_equivalent_answers_not_raw_strings():
    # raw strings: "3" wins 2 votes to 1 each; by value 1/2 == 0.5 == \frac12 has 3 votes
    rows = _rows("q", ["3", "1/2", "0.5", "3", "\\frac{1}{2}"], [False, True, True, False, True])
    assert majority(rows)["pred"] == "1/2"
    assert [len(c) for c in answer_classes(rows)] == [2, 3]


def test_majority_ties_go_to_the_class_seen_first_and_none_preds_do_not_vote():
    rows = _rows("q", [None, "7", "8,000", "8000", "7.0", None, None], [False] * 7)
    assert majority(rows)["pred"] == "7"
    assert majority(_rows("q", [None, None], [False, False])) is None


def test_group_and_pass_rates():
    rows = [{"id": 7, "sample": 1, "correct": True}, {"id": "x", "sample": 0, "correct": False},
            {"id": "7", "sample": 0, "correct": False}, {"id": 7, "sample": 2, "correct": True}]
    by = group(rows)
    assert list(by) == ["7", "x"]  # ids as text, first-seen order
    assert [r["sample"] for r in by["7"]] == [1, 0, 2]  # input order (rounds of a pooled file stay apart)
    assert pass_rates(rows) == {"7": pytest.approx(2 / 3), "x": 0.0}


def test_majority_class_with_another_equivalence():
    rows = _rows("q", ["1/2", "0.5", "3", "3"], [True] * 4)
    assert [r["pred"] for r in majority_class(rows, same=lambda a, b: False)] == ["3", "3"]  # raw strings
    assert [r["pred"] for r in majority_class(rows)] == ["1/2", "0.5"]  # by value: a tie, the first class wins
    assert majority_class(_rows("q", [None], [False])) == []


def test_majority_keeps_tuples_apart():
    rows = _rows("q", ["0, 1", "01", "10", "1, 0"], [True, False, False, True])
    assert [len(c) for c in answer_classes(rows)] == [2, 1, 1]  # "1, 0" joins "0, 1" (unordered list)


def test_summarize_pass_and_maj():
    rows = (_rows("a", ["5", "5.0", "4", "3"], [True, True, False, False])
            + _rows("b", ["1", "2", "2", "2"], [True, False, False, False]))
    s = summarize(rows, ks=[1, 2, 4, 8])
    assert s["n"] == 2 and s["samples_per_question"] == 4
    assert s["accuracy"] == pytest.approx((0.5 + 0.25) / 2)
    assert s["pass@1"] == pytest.approx(s["accuracy"])
    assert s["pass@2"] == pytest.approx((5 / 6 + 1 / 2) / 2)  # a: 2 of 4 right, 1 - 1/6; b: 1 of 4, 1 - 3/6
    assert s["pass@4"] == 1.0
    assert s["maj@4"] == pytest.approx(0.5)  # a: 5 (2 votes incl. 5.0) right; b: 2 wrong
    assert s["maj@1"] == pytest.approx(1.0)  # first samples: 5 and 1, both right
    assert "pass@8" not in s  # k > n is skipped
    assert s["timeouts"] == 0 and s["no_answer"] == 0


def test_grade_command(tmp_path, capsys):
    from mathpo.cli import main

    rows = [{"id": "q1", "sample": 0, "completion": "so \\boxed{8,000}", "gold": "8000"},
            {"id": "q1", "sample": 1, "completion": "#### 18\n\nQuestion: 5 apples? Answer: #### 5", "gold": "5"},
            {"id": "q2", "sample": 0, "completion": "she has 14 left", "gold": "14", "keep": [1, 2]}]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["grade", str(src), "--output", str(dst), "--workers", "2"]) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    added = ("pred", "correct", "strict_correct", "timeout", "truncated")
    assert [{k: r[k] for k in r if k not in added} for r in out] == rows
    assert [(r["pred"], r["correct"], r["strict_correct"], r["timeout"]) for r in out] == [
        ("8,000", True, True, False), ("18", False, False, False), ("14", True, False, False)]
    assert "wrote" in capsys.readouterr().out


def test_grade_command_user_errors(tmp_path):
    from mathpo.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "x"}\n')
    assert main(["grade", str(bad), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert main(["grade", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2


def _vote_row(pred, correct, truncated=None):
    return {"id": "q", "pred": pred, "correct": correct, "strict_correct": correct, "truncated": truncated}


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 1, 0), (2, 0, 1)])
def test_maj_ignores_cut_off_rows_and_row_order(order):
    # a cut-off "12" (never graded correct), a boxed "12" (right), a "7"; gold 12
    rows = [_vote_row("12", False, "length"), _vote_row("12", True), _vote_row("7", False)]
    assert summarize([rows[i] for i in order], ks=[3])["maj@3"] == 0.5  # the cut-off row has no vote: 1-1 tie
    assert sorted(len(c) for c in answer_classes([rows[i] for i in order])) == [1, 1]


def test_maj_cut_off_rows_do_not_vote():
    rows = [_vote_row("7", False, "length"), _vote_row("7", False, "repetition"), _vote_row("12", True)]
    assert summarize(rows, ks=[3])["maj@3"] == 1.0  # two cut-off 7s do not outvote one finished 12
    assert majority(rows)["pred"] == "12"
    assert summarize([_vote_row("12", False, "length")], ks=[1])["maj@1"] == 0.0  # no vote at all


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 0, 1)])
def test_maj_class_is_right_when_any_of_its_rows_is(order):
    # "12" and "12.0" are one class; the second lost its symbolic check (timeout, graded wrong)
    rows = [_vote_row("12", True), {**_vote_row("12.0", False), "timeout": True}, _vote_row("7", False)]
    assert summarize([rows[i] for i in order], ks=[3])["maj@3"] == 1.0


def test_maj_ties_score_the_share_of_tied_classes_that_are_right():
    right, wrong = _vote_row("12", True), _vote_row("7", False)
    assert summarize([right, wrong], ks=[2])["maj@2"] == summarize([wrong, right], ks=[2])["maj@2"] == 0.5
    three = [right, wrong, _vote_row("9", False)]
    assert summarize(three, ks=[3])["maj@3"] == pytest.approx(1 / 3)
