"""The report's pseudo-label comparison (DPO-ST's mechanism) on a hand-computed case."""

from __future__ import annotations

import json

import pytest

from mathpo.report_labels import compare, labels_table


def rows(qid: str, marks: list[tuple[int, str]]) -> list[dict]:
    return [{"id": qid, "sample": i, "correct": bool(c), "completion": t} for i, (c, t) in enumerate(marks)]


BEFORE = rows("q1", [(1, "a"), (0, "b"), (1, "a"), (1, "c")]) + rows("q2", [(0, "d"), (0, "e"), (1, "f"), (0, "g")])
AFTER = rows("q1", [(1, "a"), (1, " a\n")]) + rows("q2", [(1, "x"), (1, "y")])


def test_equal_n_paired_measures():
    c = compare(BEFORE, AFTER)
    assert (c["questions"], c["m"]) == (2, 2)  # the DPO model has 2 samples a question: compare the first 2 of 4
    acc, pas, dist = c["accuracy"], c["pass@m"], c["distinct_correct"]
    # q1: 1/2 -> 2/2, q2: 0/2 -> 2/2; differences 0.5 and 1, sd 0.354, interval 0.75 +- 1.96 * 0.354 / sqrt 2
    assert (acc["before"], acc["after"], acc["diff"]) == (0.25, 1.0, 0.75)
    assert acc["ci95"] == pytest.approx([0.75 - 0.49, 0.75 + 0.49], abs=1e-3)
    # pass@2: q2 gained, nothing lost; one discordant question, exact McNemar p = 1
    assert (pas["before"], pas["after"], pas["gained"], pas["lost"], pas["mcnemar_p"]) == (0.5, 1.0, 1, 0, 1.0)
    # distinct correct texts, whitespace-normalized: q1 "a" and " a\n" are one; q2 x, y are two
    assert (dist["before"], dist["after"], dist["diff"]) == (0.5, 1.5, 1.0)


def test_table_from_a_run_folder(tmp_path):
    for stage, data in (("sample", BEFORE), ("sample_dpo", AFTER)):
        (tmp_path / "iter_1" / stage).mkdir(parents=True)
        (tmp_path / "iter_1" / stage / "graded.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    text = labels_table(tmp_path, ["iter_0/warmup_sft", "iter_1/sample", "iter_1/sample_dpo"])
    assert "| iter_1 | 2 | 2 | 25.0% -> 100.0% (+75.0" in text
    assert labels_table(tmp_path, ["iter_0/warmup_sft"]) == ""  # no dpo-st iteration: no section
