"""The grader on every GSM8K test and MATH test solution in ../shared/data (skipped when absent):
gold solutions are correct, the same with a changed final answer are wrong, run-on text is ignored,
and MATH answers written in equivalent forms still match."""

from __future__ import annotations

import json
import re

import pytest

from conftest import DATA
from mathpo.grading import grade_rows
from mathpo.grading.extract import after_hashes, last_boxed

pytestmark = pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").is_file(), reason="no ../shared/data")


def _read(name):
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_gsm8k_test_solutions():
    data = _read("gsm8k/test.jsonl")
    rows = []
    for i, r in enumerate(data):
        gold = after_hashes(r["answer"])
        nxt = data[(i + 1) % len(data)]
        wrong = str(int(gold.replace(",", "")) + 1)
        body = r["answer"][: r["answer"].index("####")]
        rows += [{"completion": r["answer"], "gold": gold, "want": (True, True)},
                 {"completion": body + "#### " + wrong, "gold": gold, "want": (False, False)},
                 {"completion": body + "The answer is " + wrong + ".", "gold": gold, "want": (False, False)},
                 {"completion": r["answer"] + "\n\nQuestion: " + nxt["question"] + "\nAnswer: " + nxt["answer"],
                  "gold": gold, "want": (True, True)},
                 {"completion": body.rstrip() + " So she has " + f"{int(gold.replace(',', '')):,}" + " left.",
                  "gold": gold, "want": (True, False)}]
    graded = grade_rows(rows, workers=2)
    bad = [(r["completion"][-80:], r["gold"], r["pred"]) for r in graded
           if (r["correct"], r["strict_correct"]) != r["want"]]
    assert not bad, bad[:5]


def test_math_test_solutions():
    rows = []
    for r in _read("math/test.jsonl"):
        gold = last_boxed(r["solution"])
        cut = r["solution"].rfind("\\boxed")
        body = r["solution"][:cut]
        rows.append({"completion": r["solution"], "gold": gold, "want": True})
        rows.append({"completion": r["solution"] + "\n\nProblem: What is $1+1$?\nSolution: $\\boxed{2}$", "gold": gold,
                     "want": True})
        if "\\boxed" in body:  # a few solutions box twice ("Note: \boxed{3} is also accepted"): keep it simple
            continue
        rows.append({"completion": body + "\nFinal Answer: The final answer is $" + gold + "$. I hope it is correct.",
                     "gold": gold, "want": True})
        if re.fullmatch(r"-?\d+", gold):
            rows.append({"completion": body + "\\boxed{" + str(int(gold) + 1) + "}", "gold": gold, "want": False})
            rows.append({"completion": body + "\\boxed{" + gold + ".0}", "gold": gold, "want": True})
        m = re.fullmatch(r"\\frac\{(\d+)\}\{(\d+)\}", gold)
        if m:
            rows.append({"completion": body + f"\\boxed{{{m.group(1)}/{m.group(2)}}}", "gold": gold, "want": True})
            rows.append({"completion": body + f"\\boxed{{\\dfrac{{{m.group(2)}}}{{{m.group(1)}}}}}", "gold": gold,
                         "want": m.group(1) == m.group(2)})
    graded = grade_rows(rows, workers=2)
    bad = [(r["gold"], r["pred"], r["want"]) for r in graded if r["correct"] != r["want"]]
    assert not bad, bad[:5]
    assert sum(r["timeout"] for r in graded) == 0
