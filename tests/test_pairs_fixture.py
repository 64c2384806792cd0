"""The hand-marked localization fixture (tests/fixtures/locator_marked.jsonl) used by
bench/locator.py: every mark points at a real step of a wrong solution
the model wrote, and the benchmark's scoring counts hits exactly."""

import importlib.util
from pathlib import Path

import pytest

from mathpo import grading
from mathpo.pairs.split import split
from mathpo.records import read_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "locator_marked.jsonl"
BENCH = Path(__file__).resolve().parents[1] / "bench" / "locator.py"


def bench():
    spec = importlib.util.spec_from_file_location("bench_locator", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(not FIXTURE.is_file(), reason="fixture not built")
def test_fixture_marks_are_valid():
    rows = read_jsonl(FIXTURE)
    assert len(rows) >= 30
    assert len({r["key"] for r in rows}) == len(rows)
    for r in rows:
        n = len(split(r["completion"]))
        assert 1 <= r["marked_step"] <= n, r["key"]
        assert r["reason"].strip(), r["key"]
        assert not grading.grade(r["completion"], r["gold"])["correct"], r["key"]
        assert all(grading.grade(c, r["gold"])["correct"] for c in r["correct_samples"])


def test_scoring_counts_exact_and_near_hits():
    rows = [{"marked_step": 2}, {"marked_step": 3}, {"marked_step": 1}, {"marked_step": 4}]
    s = bench().score(rows, [2, 4, None, 1])
    assert s["hit_rate"] == 0.25 and s["within_one"] == 0.5
    assert (s["too_early"], s["too_late"], s["not_located"]) == (1, 1, 1)
