"""Grading never hangs or crashes: adversarial inputs each return within BOUND, from any thread.

Exponent towers send sympy into (practically) endless work; the wall-clock limit kills the worker
process and reports `timeout`. Huge completions, unbalanced braces, division by zero and control
characters must be handled by extraction and the fast path alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mathpo.grading import equivalent, grade, grade_rows
from mathpo.grading.symbolic import DEFAULT_TIMEOUT, Pool

TOWER = "2^{2^{2^{2^{2^{2^{2}}}}}}"
# The symbolic check's default limit (3 s) plus the kill and the start of a fresh worker: 5 s on
# a quiet machine, 5.3-5.6 s seen next to an ablation run on both cores.
BOUND = DEFAULT_TIMEOUT + 4.0

ADVERSARIAL = [
    # (completion, gold, expected correct); sympy hangs on a tower against a small number
    ("\\boxed{" + TOWER + "}", "2", False),
    ("\\boxed{9^{9^{9^{9}}}}", "9^{9^{9^{9}}}+1", False),
    ("\\boxed{10^{10^{10}}}", "10^{10^{10}}", True),
    ("\\boxed{(10^{100})!}", "1", False),
    ("x" * 100_000 + " so the answer is 5", "5", True),
    ("7 " * 50_000, "7", False),  # degenerate repetition: no answer, never correct (grading.truncation)
    ("The answer is " + "1+" * 30_000 + "1", "30001", False),
    ("\\boxed{" * 5000 + "5", "5", False),  # a run of openings that never closes: cut off, never correct
    ("{" * 5000 + "\\boxed{5}" + "}" * 3, "5", True),
    ("}" * 5000 + "#### 5", "5", True),
    ("\\boxed{" + "(" * 3000 + "5" + ")" * 3000 + "}", "5", False),
    ("\\boxed{" + "\\sqrt{" * 300 + "2" + "}" * 300 + "}", "1", False),
    ("\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}", "3", False),
    ("\\boxed{\\frac{" + "1" * 5000 + "}{3}}", "5", False),
    ("\\boxed{1/0}", "1", False),
    ("\\boxed{\\frac{1}{0}}", "\\infty", False),
    ("\\boxed{0/0}", "0", False),
    ("\\boxed{0^{-1}}", "0", False),
    ("\x00\x01\x02 #### 7\x1b[31m", "7", True),
    ("\\boxed{\x00\x7f5\x08}", "5", True),
    ("\ufeff\u200b#### 12", "12", True),
    ("\\boxed{x^{x^{x^{x^{x^{x}}}}}}", "x^{x^{x^{x^{x^{y}}}}}", False),
    ("\\boxed{" + "x+" * 400 + "x}", "401x+1", False),
    ("$" * 10_000 + "42", "42", True),
    ("\\boxed{\\sqrt{-1}}", "i", False),
]


@pytest.mark.parametrize("completion,gold,correct", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_returns_fast(completion, gold, correct):
    t = time.monotonic()
    g = grade(completion, gold)
    assert time.monotonic() - t < BOUND
    assert g["correct"] is correct


def test_tower_times_out_with_flag_and_pool_recovers():
    t = time.monotonic()
    g = grade("\\boxed{" + TOWER + "}", "3", timeout=1.0)
    assert time.monotonic() - t < 5.0
    assert g == {"pred": TOWER, "correct": False, "strict_correct": False, "timeout": True, "truncated": None}
    # the killed worker was replaced: the next symbolic check works
    assert equivalent("\\log_2 16", "4")


def test_timeout_works_off_the_main_thread():
    out = {}
    th = threading.Thread(target=lambda: out.update(grade("\\boxed{" + TOWER + "}", "5", timeout=1.0)))
    t = time.monotonic()
    th.start()
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t < 5.0
    assert out["timeout"] is True and out["correct"] is False


def test_threads_grading_together():
    pairs = [("\\boxed{\\log_2 8}", "3"), ("#### 18", "18"), ("\\boxed{\\log_3 9}", "3"), ("#### 1,000", "1000")]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda p: grade(*p)["correct"], pairs))
    assert got == [True, True, False, True]


def test_pool_kills_only_the_overrunning_job():
    pool = Pool(workers=2)
    try:
        t = time.monotonic()
        got = pool.run([(TOWER, "6"), ("\\log_2 8", "3"),
                        ("\\log_2 8", "4")], timeout=1.0)
        assert time.monotonic() - t < 15.0  # includes starting two workers
        assert got == [(False, True), (True, False), (False, False)]
    finally:
        pool.close()


def test_grade_rows_keeps_order_and_adds_fields():
    rows = [{"id": "a", "completion": "#### 5", "gold": "5", "extra": 1},
            {"id": "b", "completion": "\\boxed{\\log_2 8}", "gold": "3"},
            {"id": "c", "completion": "no answer", "gold": "2"},
            {"id": "d", "completion": "it is 4", "gold": "4"}]
    out = grade_rows(rows, workers=2)
    assert [r["id"] for r in out] == ["a", "b", "c", "d"]
    assert out[0]["extra"] == 1
    assert [(r["pred"], r["correct"], r["strict_correct"], r["timeout"]) for r in out] == [
        ("5", True, True, False), ("\\log_2 8", True, True, False), (None, False, False, False),
        ("4", True, False, False)]
