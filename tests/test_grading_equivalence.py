"""grading.equivalence: answer pairs as models write them (GSM8K and MATH style), each with its verdict.

Every row is (pred, gold, expected). Rows marked in comments name the failure class they guard.
"""

from __future__ import annotations

import pytest

from mathpo.grading import equivalent
from mathpo.grading.equivalence import fast

EQUAL = [
    # numbers: separators, currency, percent, units, trailing .0, leading .5
    ("18", "18"), ("18.0", "18"), ("18.00", "18"), ("$18", "18"), ("\\$18", "18"), ("18 dollars", "18"),
    ("\\$18.00", "18"), ("8,000", "8000"), ("8{,}000", "8000"), ("1,234,567", "1234567"), ("8000", "8,000"),
    ("8\\,000", "8000"), ("50\\%", "50"), ("50%", "50"), ("50\\%", "0.5"), (".5", "0.5"), ("0.50", "\\frac12"),
    ("-7", "-7"), ("−7".replace("−", "-"), "-7"), ("+7", "7"), ("007", "7"), ("3 cm", "3"), ("3\\text{ cm}", "3"),
    ("3\\text{ cm}^2", "3"), ("12 \\text{ inches}", "12"), ("5\\mbox{ feet}", "5"), ("90^\\circ", "90"),
    ("90^{\\circ}", "90"), ("90°", "90"), ("90 degrees", "90"), ("\\text{18}", "18"), ("18.", "18"),
    ("1.5", "\\frac{3}{2}"), ("1.5", "3/2"), ("0.125", "\\frac18"), ("-0.25", "-\\frac{1}{4}"),
    ("2.5\\text{ hours}", "2.5"), ("1e3", "1e3"), ("10^{3}", "1000"), ("2^{10}", "1024"), ("100000", "10^5"),
    # fractions: \frac / \dfrac / \tfrac / a/b, unsimplified forms
    ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("\\tfrac{1}{2}", "\\frac12"), ("1/2", "\\frac{1}{2}"),
    ("\\frac{2}{4}", "\\frac{1}{2}"), ("-\\frac{3}{4}", "\\frac{-3}{4}"), ("\\frac{-3}{4}", "-\\frac34"),
    ("\\frac{3}{-4}", "-\\frac{3}{4}"), ("\\frac{10}{5}", "2"), ("\\frac{1}{2}+\\frac{1}{3}", "\\frac56"),
    ("\\frac{16000}{2}", "8,000"), ("\\cfrac{7}{8}", "7/8"), ("{\\frac{1}{2}}", "\\frac12"),
    # exact big/small values
    ("\\frac{1}{2004!}", "\\frac{1}{2004!}"), ("1/2006!", "\\frac{1}{2006!}"), ("5!", "120"),
    ("\\binom{10}{3}", "120"), ("2^{100}", "1267650600228229401496703205376"),
    ("\\frac{1}{2^{100}}", "2^{-100}"), ("0.000001", "10^{-6}"),
    # roots and pi
    ("\\sqrt{2}", "\\sqrt2"), ("2\\sqrt{3}", "\\sqrt{12}"), ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("\\frac{\\sqrt3}{3}", "\\frac{1}{\\sqrt3}"), ("3\\sqrt{2}", "\\sqrt{18}"), ("\\sqrt{16}", "4"),
    ("\\sqrt[3]{27}", "3"), ("\\sqrt[3]{16}", "2\\sqrt[3]{2}"), ("2\\pi", "2 \\pi"), ("\\pi r^2", "\\pi r^2"),
    ("\\frac{\\pi}{2}", "\\frac12\\pi"), ("4\\pi", "4 \\pi \\text{ square units}"),
    ("\\frac{5\\sqrt{2}}{2}", "\\frac{5}{\\sqrt{2}}"), ("1+\\sqrt{2}", "\\sqrt{2}+1"),
    ("\\left(\\frac{1}{2}\\right)", "\\frac12"), ("\\left( 3, 4 \\right)", "(3,4)"),
    # x = 3 vs 3, equations
    ("x = 3", "3"), ("x=3", "3"), ("k = \\frac{1}{2}", "\\frac12"), ("a=-4", "-4"), ("3", "x=3"),
    ("y = 2x + 3", "y=2x+3"), ("y = 3 + 2x", "y=2x+3"), ("2x+3", "y = 2x+3"),
    # tuples, intervals, sets, lists
    ("(3, 4)", "(3,4)"), ("(3,4)", "\\left(3, 4\\right)"), ("(0.5, 2)", "\\left(\\frac12,2\\right)"),
    ("[0, 1)", "[0,1)"), ("(-\\infty, 2]", "(-\\infty,2]"),
    ("(-\\infty,0)\\cup(1,\\infty)", "(1,\\infty)\\cup(-\\infty,0)"),
    ("\\{1, 2\\}", "\\{2,1\\}"), ("1, 2", "2, 1"), ("0, 1", "0,1"), ("-2, 3", "3, -2"), ("1,2,3", "3,2,1"),
    ("\\{-1, 4\\}", "4, -1"), ("(1, -2, 3)", "(1,-2,3)"),
    ("(2, \\frac{\\pi}{3})", "\\left( 2, \\frac{\\pi}{3} \\right)"),
    ("1 \\text{ and } 2", "1, 2"), ("x = 1, 2", "1,2"),
    # matrices
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("\\begin{pmatrix} 0.5 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} \\frac{1}{2} \\\\ 2 \\end{pmatrix}"),
    ("\\begin{bmatrix} 1 & 0 \\\\ 0 & 1 \\end{bmatrix}", "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}"),
    # expressions in variables
    ("x^2+2x+1", "(x+1)^2"), ("2(x+1)", "2x+2"), ("a^2 - b^2", "(a-b)(a+b)"), ("\\frac{x}{2}", "0.5x"),
    ("3x^2 - 6x", "3x(x-2)"), ("x^{2}", "x^2"), ("n(n+1)/2", "\\frac{n^2+n}{2}"),
    # text answers
    ("\\text{Monday}", "Monday"), ("\\text{(C)}", "C"), ("(C)", "\\text{(C)}"), ("\\text{Yes}", "yes"),
    ("\\text{east}", "\\text{East}"), ("\\textbf{odd}", "\\text{odd}"),
    # wrappers
    ("$18$", "18"), ("\\(18\\)", "18"), ("\\boxed{18}", "18"), ("\\[\\frac12\\]", "0.5"), ("18\\!", "18"),
    # repeating decimals, plus-minus
    ("0.\\overline{3}", "\\frac13"), ("0.1\\overline{6}", "\\frac16"), ("1.\\overline{09}", "\\frac{12}{11}"),
    ("\\pm 2", "2, -2"), ("1 \\pm \\sqrt{2}", "1-\\sqrt2, 1+\\sqrt2"),
    # eaten backslashes (a JSON writer turned \f into a form feed)
    ("\x0crac{1}{2}", "\\frac12"),
]

DIFFERENT = [
    # tuple answers must not be fused by comma stripping ("0, 1" is not "01")
    ("0, 1", "01"), ("01", "0,1"), ("(1, 2)", "(2, 1)"), ("(1,2)", "[1,2]"), ("[0,1)", "[0,1]"),
    ("(1, 2)", "(1, 2, 3)"), ("1, 2", "1, 2, 3"), ("\\{1,2\\}", "\\{1,3\\}"), ("1,2", "12"),
    # 8,000 is eight thousand, not 000 or 8
    ("8,000", "8"), ("8,000", "0"), ("8,000", "800"),
    # exact arithmetic: no collapse of tiny or huge values
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}"), ("1/2004!", "1/2006!"), ("2^{100}", "2^{100}+1"),
    ("10^{-20}", "2 \\cdot 10^{-20}"), ("\\frac{1}{3}", "0.333"), ("\\frac{1}{3}", "0.3333333"),
    ("\\sqrt{2}", "1.414"), ("\\pi", "3.14"), ("\\pi", "3.14159"), ("2^{64}", "2^{64}-1"),
    # plain wrong answers
    ("17", "18"), ("18.5", "18"), ("-18", "18"), ("180", "18"), ("1.8", "18"), ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("\\frac{3}{4}", "\\frac{4}{3}"), ("2\\sqrt{3}", "3\\sqrt{2}"), ("\\sqrt{2}", "2"), ("2\\pi", "\\pi"),
    ("x = 4", "3"), ("y = 2x + 4", "y = 2x + 3"), ("x^2+2x+1", "(x-1)^2"), ("2x", "2y"), ("x+1", "x"),
    ("(-\\infty, 2)", "(-\\infty, 2]"), ("(-\\infty,0)\\cup(1,\\infty)", "(-\\infty,0)\\cup(2,\\infty)"),
    ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}"),
    ("A", "B"), ("\\pm 2", "2"), ("0.\\overline{3}", "0.3"),
    ("\\text{Monday}", "Tuesday"), ("(B)", "(C)"), ("\\text{odd}", "\\text{even}"), ("Monday", "5"),
    ("50\\%", "5"), ("0.5", "5"), ("5", ""), ("", "5"), ("3 cm", "30"),
    # division by zero is not a value
    ("\\frac{1}{0}", "1"), ("1/0", "0"), ("0/0", "0"),
]


@pytest.mark.parametrize("pred,gold", EQUAL)
def test_equal(pred, gold):
    assert equivalent(pred, gold), (pred, gold)


@pytest.mark.parametrize("pred,gold", DIFFERENT)
def test_different(pred, gold):
    assert not equivalent(pred, gold), (pred, gold)


def test_fast_path_decides_plain_cases_without_sympy():
    # these must never reach the worker pool: they decide the bulk of real outputs
    for pred, gold, want in [("18.0", "18", True), ("8,000", "8000", True), ("0, 1", "01", False),
                             ("\\frac{1}{2004!}", "\\frac{1}{2006!}", False),
                             ("\\dfrac{\\sqrt3}{2}", "\\frac{\\sqrt{3}}{2}", True),
                             ("(1,2)", "(2,1)", False), ("x^2+2x+1", "(x+1)^2", True), ("17", "18", False)]:
        assert fast(pred, gold) is want, (pred, gold)


def test_none_prediction_is_wrong():
    assert not equivalent(None, "5")


@pytest.mark.parametrize("pred,gold,want", [
    # sympy (Math-Verify) decides what the fast path cannot: trig identities, logs, ratios
    ("\\sin^2 x + \\cos^2 x", "1", True),
    ("\\log_2 8", "3", True),
    ("\\log_2 8", "4", False),
])
def test_symbolic_fallback(pred, gold, want):
    assert fast(pred, gold) is None
    assert equivalent(pred, gold) is want
