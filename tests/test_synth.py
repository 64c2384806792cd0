"""The synthetic problem generator (`mathpo data synth`): correct annotations, determinism, splits."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

import pytest

from mathpo import data
from mathpo.cli import main
from mathpo.data import synth
from mathpo.errors import UserError

ANNOT = re.compile(r"<<([^=<>]+)=([^<>]+)>>([^\s]+)")


def arith(expr: str) -> Fraction:
    """A tiny recursive-descent evaluator (+ - * / and parentheses) over exact fractions."""
    tokens = re.findall(r"\d+|[-+*/()]", expr.replace(" ", ""))
    assert "".join(tokens) == expr.replace(" ", ""), f"unexpected characters in {expr!r}"
    pos = 0

    def atom():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = add()
            pos += 1
            return value
        return Fraction(int(tok))

    def mul():
        nonlocal pos
        value = atom()
        while pos < len(tokens) and tokens[pos] in "*/":
            op = tokens[pos]
            pos += 1
            value = value * atom() if op == "*" else value / atom()
        return value

    def add():
        nonlocal pos
        value = mul()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]
            pos += 1
            value = value + mul() if op == "+" else value - mul()
        return value

    result = add()
    assert pos == len(tokens)
    return result


def test_evaluator_itself():
    assert arith("3*4") == 12 and arith("2+3*4") == 14 and arith("(2+3)*4") == 20 and arith("7/2") == Fraction(7, 2)


@pytest.fixture(scope="module")
def rows():
    return synth.generate(1500, (1, 4), seed=3)


def test_annotations_evaluate_to_their_results_and_answers_match(rows):
    for r in rows:
        *lines, last = r["solution"].split("\n")
        assert last == f"#### {r['gold']}"
        assert len(lines) == r["steps"]
        prev = None
        for line in lines:
            (expr, stated, shown), = ANNOT.findall(line)  # one operation per line
            value = arith(expr)
            assert value == Fraction(int(stated)) and stated == shown.rstrip(".")
            assert value.denominator == 1 and 1 <= value <= synth.MAX_VALUE
            assert len(re.findall(r"[-+*/]", expr)) == 1
            # the text before the annotation repeats the expression: "12 - 3 = <<12-3=9>>9"
            a, sym, b = re.fullmatch(r"(\d+)([-+*/])(\d+)", expr).groups()
            assert f"{a} {sym} {b} = <<" in line
            if prev is not None:  # each step continues from the previous result
                assert int(a) == prev
            prev = int(stated)
        assert prev == int(r["gold"])
        assert r["question"].endswith("?") and "{" not in r["question"] + r["solution"]


def test_calculator_and_grader_agree_with_the_generator(rows):
    from mathpo import grading
    from mathpo.sampling.calculator import evaluate

    for r in rows[:300]:
        for expr, stated, _ in ANNOT.findall(r["solution"]):
            assert evaluate(expr) == stated
        assert grading.grade(r["solution"], r["gold"])["strict_correct"]


def test_spread_of_families_steps_and_numbers(rows):
    assert set(Counter(r["family"] for r in rows)) == set(synth.FAMILIES)
    steps = Counter(r["steps"] for r in rows)
    assert set(steps) == {1, 2, 3, 4} and min(steps.values()) > 0.15 * len(rows)
    golds = [int(r["gold"]) for r in rows]
    assert sum(2 <= g <= 100 for g in golds) > 0.6 * len(golds)
    assert len({r["question"] for r in rows}) == len(rows)
    ops = Counter(m for r in rows for m in re.findall(r"<<\d+([-+*/])", r["solution"]))
    assert set(ops) == set("+-*/")


def test_deterministic_by_seed():
    assert synth.generate(50, (1, 3), seed=7) == synth.generate(50, (1, 3), seed=7)
    assert synth.generate(50, (1, 3), seed=7) != synth.generate(50, (1, 3), seed=8)


def test_train_and_test_are_disjoint_whatever_the_seeds():
    train = synth.generate(800, (1, 4), seed=0, split="train")
    test = synth.generate(300, (1, 4), seed=0, split="test")
    test2 = synth.generate(300, (1, 2), seed=5, split="test")
    train_q = {r["question"] for r in train}
    assert not train_q & {r["question"] for r in test + test2}
    assert all(synth.split_of(r["question"]) == "test" for r in test)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in test})


def test_steps_range_is_respected():
    assert {r["steps"] for r in synth.generate(60, (2, 3), seed=1)} == {2, 3}
    assert {r["steps"] for r in synth.generate(20, (4, 4), seed=1)} == {4}


@pytest.mark.parametrize("text", ["0-2", "3-1", "x", "1-5"])
def test_bad_steps_are_user_errors(text):
    with pytest.raises(UserError):
        synth.parse_steps(text)


def test_cli_writes_loader_records(tmp_path, capsys):
    out = tmp_path / "synth.jsonl"
    assert main(["data", "synth", "--n", "30", "--steps", "1-2", "--seed", "4", "--split", "test",
                 "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    records = data.load(str(out))
    assert len(records) == 30
    assert records == [{**r, "gold": r["gold"]} for r in synth.generate(30, (1, 2), 4, "test")]
    assert all(set(r) >= {"id", "question", "gold", "solution", "steps"} for r in records)
    assert main(["data", "synth", "--n", "0", "--output", str(out)]) == 2
