"""A step's own arithmetic, checked before it becomes a Step-DPO `chosen` step (`mathpo pairs --kind
step`, `pairs.rectify`). A rollout that reaches the gold answer can still begin with a wrong step
(`She has 16 - 8 = <<16-8=8>>16 balloons left.`), so its success does not vouch for that step.

Every GSM8K-style annotation `<<expr=R>>` in the step must have R equal to the calculator's value
of expr (`sampling.calculator.evaluate`, which parses and never executes), and the number written
right after `>>` must repeat R, as every GSM8K reference solution does. Formatting is allowed:
`1,000` for 1000, `$` signs (in expr too), a trailing `.0`; a result with decimals may be rounded
to as many as it shows (`10/3=3.3`, `20/5000=.004`). A step without annotations passes. Of the
GSM8K train and test solutions' 27,998 annotated lines one fails (`<<3/4=3/4>>`, a fraction).
`error(step)` names the first fault:
- `malformed`: a `<<` that does not open a closed `expr=R>>`;
- `unevaluable`: the calculator refuses expr (not plain arithmetic), so R cannot be checked;
- `wrong_result`: R is not a number or not expr's value;
- `no_repeat`: no number right after `>>`;
- `wrong_repeat`: the number after `>>` differs from R.
"""

from __future__ import annotations

import re

from ..sampling.calculator import CLOSE, OPEN, evaluate

SCALE = 10 ** 6
REASONS = ("malformed", "unevaluable", "wrong_result", "no_repeat", "wrong_repeat")
_ANNOTATION = re.compile(re.escape(OPEN) + r"([^<>=]*)=([^<>]*)" + re.escape(CLOSE))
# a written number: optional sign and $, digits with or without thousands commas, optional decimals
_NUMBER = r"-?\$?\s*-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\s*-?\.\d+"
_WHOLE = re.compile(rf"^\s*(?:{_NUMBER})\s*$")
_REPEAT = re.compile(rf"\s*({_NUMBER})")


def _value(text: str) -> tuple[float, int] | None:
    """(value, decimals shown) of a written number, or None when it is not one."""
    if not _WHOLE.match(text):
        return None
    plain = re.sub(r"[\s$,]", "", text)
    if plain.count("-") > 1:
        return None
    plain = "-" + plain.replace("-", "") if "-" in plain else plain
    _, dot, frac = plain.partition(".")
    return float(plain), (len(frac) if dot else 0)


def _agrees(written: str, exact: float, slack: float = 0.0) -> bool:
    """`written` is `exact` (known to within `slack`), to as many decimals as `written` shows."""
    got = _value(written)
    if got is None:
        return False
    value, decimals = got
    if value == int(value):
        decimals = 0  # "8.0" states 8, exactly
    tolerance = 0.5 * 10 ** -decimals if decimals else 0.0
    return abs(value - exact) <= tolerance + slack + 1e-9 * max(1.0, abs(exact))


def _exact(expr: str) -> tuple[float, float] | None:
    """(value, how far off it may be) of expr by the calculator, which prints 2 decimals (20/5000
    prints 0): read at 8 decimals by scaling, or at 2 where the scaled value is past its bounds."""
    plain = evaluate(expr)  # first on its own: `1) + (2` must not become an expression by the wrapping
    if plain is None:
        return None
    scaled = evaluate(f"({expr})*{SCALE}")
    return (float(plain), 0.005) if scaled is None else (float(scaled) / SCALE, 0.5 / SCALE)


def error(step: str) -> str | None:
    """The first fault in `step`'s arithmetic (one of REASONS), or None when it is sound."""
    found = list(_ANNOTATION.finditer(step))
    if len(found) != step.count(OPEN):
        return "malformed"
    for m in found:
        expr, result = m.group(1), m.group(2)
        exact = _exact(expr.replace("$", ""))  # `<<$16-$8=$8>>`: dollars are formatting
        if exact is None:
            return "unevaluable"
        if not _agrees(result, *exact):
            return "wrong_result"
        repeat = _REPEAT.match(step, m.end())
        if repeat is None:
            return "no_repeat"
        if not _agrees(repeat.group(1), _value(result)[0]):
            return "wrong_repeat"
    return None


def normalize(step: str) -> str:
    """A step's text for counting equal steps: whitespace collapsed."""
    return " ".join(step.split())
