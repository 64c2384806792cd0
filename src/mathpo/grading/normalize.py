"""String normalization of answers and their split into structures (used by grading.equivalence).

`normalize(s)` turns the many spellings of one answer into one string: `\\dfrac` -> `\\frac`,
`\\frac12` -> `\\frac{1}{2}`, no `$`, `\\left`/`\\right`, spacing commands, `\\text{}` wrappers,
degrees, units and thousands separators (`8,000` and `8{,}000` -> `8000`, but never `0, 1`).
`structure(s)` reads a normalized answer as a tree of tuples: ("atom", s), ("tuple", open, items,
close) for tuples and intervals, ("set", items), ("list", items) for bare comma lists,
("union", items), ("matrix", rows), ("eq", lhs, rhs).
"""

from __future__ import annotations

import re

MAX_ANSWER = 2_000  # longer answers are compared as strings only

# Backslash escapes that a JSON writer or a model ate: "\frac" read as form feed + "rac".
_EATEN = [("\x0c", "\\f"), ("\x08", "\\b"), ("\x07", "\\a"), ("\x0b", "\\v")]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_UNITS = (
    "dollars?|cents?|units?|square|sq|cubic|feet|foot|ft|inch(?:es)?|in|yards?|yd|miles?|mi|meters?|metres?|"
    "cm|mm|km|kilometers?|centimeters?|millimeters?|grams?|kg|kilograms?|pounds?|lbs?|ounces?|oz|"
    "liters?|litres?|ml|gallons?|quarts?|cups?|hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|"
    "months?|years?|yrs?|degrees?|deg|percent|points?|people|persons?|students?|apples?|cookies?|marbles?|"
    "pieces?|books?|eggs?|boxes|cars?|times|ways?|mph|km/h|per|hour|each|items?|bags?|pages?|tickets?|"
    "children|kids|boys|girls|men|women|pairs?|dozens?|bottles?|cans?|slices?|pencils?|pens?|rolls?|sheep|"
    "cows?|dogs?|cats?|birds?|trees?|flowers?|plants?|friends?|games?|words?|steps?|laps?|rounds?|"
    "calories|sandwiches|pizzas?|baskets?|gifts?|toys?|stickers?|candies|candy|chocolates?|blocks?|cards?|"
    "bills?|coins?|quarters?|dimes?|nickels?|pennies|batches|loaves|servings?|shirts?|houses?|rooms?|"
    "floors?|seats?|rows?|tables?|chairs?|balls?|boats?|bikes?|bicycles?|trucks?|buses|trips?|"
    "liters|mL|sq\\.?|ft\\.?|in\\.?|cm\\^2|m\\^2|units\\^2"
)
_UNIT_TAIL = re.compile(r"(?<=[\d}.)])\s*(?:(?:" + _UNITS + r")\b\.?\s*)+(?:\^\{?[23]\}?)?$", re.I)
_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname|textnormal)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad|\\displaystyle|\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
_THOUSANDS = re.compile(r"(?<![\d.,])(\d{1,3})((?:,\d{3})+)(?![\d,]|\.\d*,)")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")
_FRAC_HALF2 = re.compile(r"\\frac\s*(\d)\s*\{")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_LEAD_DOT = re.compile(r"(?<![\d}])\.(\d)")
_TRAIL_ZEROS = re.compile(r"(\d)\.0+(?!\d)")
_SIMPLE_SUP = re.compile(r"\^\{(-?\w)\}")
_ASSIGN = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+|[a-zA-Z]_\{?\w+\}?)\s*(?:=|\\in)\s*(?=[^=])")


def clean(s: str) -> str:
    for bad, good in _EATEN:
        s = s.replace(bad, good)
    return _CONTROL.sub(" ", s.replace("\t", " ").replace("\n", " ").replace("\r", " "))


def _strip_wrappers(s: str) -> str:
    s = s.strip()
    for _ in range(3):
        before = s
        m = re.fullmatch(r"\\(?:boxed|fbox)\s*\{(.*)\}", s, re.S)
        if m:
            s = m.group(1).strip()
        if len(s) >= 2 and s[0] == "$" and s[-1] == "$":
            s = s.strip("$").strip()
        for a, b in (("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(a) and s.endswith(b):
                s = s[2:-2].strip()
        s = s.rstrip(".").strip()
        if s == before:
            break
    return s


def normalize(s: str) -> str:
    """One canonical spelling of an answer string (see module docstring); '' for no answer."""
    s = _strip_wrappers(clean(s)[:MAX_ANSWER])
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "%").replace("{,}", ",")
    s = s.replace("\\{", "{{").replace("\\}", "}}")  # keep set braces apart from grouping braces
    s = re.sub(r"(?<=\d)\\[,!;: ]\s*(?=\d{3}(?!\d))", "", s)  # 8\,000: a thin space between thousands
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    for _ in range(3):
        s = _TEXT_CMD.sub(r" \1 ", s)
    s = (s.replace("\\dots", "\\ldots").replace("\\cdots", "\\ldots").replace("\\neq", "\\ne")
         .replace("\\times", "\\cdot").replace("\\ast", "*"))
    s = re.sub(r"\\(?:le|ge)(?![a-z])", lambda m: m.group() + "q", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"^(?:the answer is|answer:?)\s*", "", s, flags=re.I)
    s = _UNIT_TAIL.sub("", s).strip()
    s = re.sub(r"\s*(?:%|percent)$", "%", s)
    if not s.startswith(("(", "[", "{")):  # inside a tuple, "1,234" may be two numbers
        s = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), s)
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF2.sub(r"\\frac{\1}{", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = _REPEATING.sub(_repeating, s)
    s = _LEAD_DOT.sub(r"0.\1", s)
    s = _TRAIL_ZEROS.sub(r"\1", s)
    s = _SIMPLE_SUP.sub(r"^\1", s)
    s = re.sub(r"\s*([=<>+\-*/^_,;(){}\[\]&|])\s*", r"\1", s)  # spaces around operators carry nothing
    return s.rstrip(".").strip()


_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\{(\d+)\}")


def _repeating(m: re.Match) -> str:
    """0.1\\overline{6} -> \\frac{1}{6}: a repeating decimal is an exact fraction."""
    from fractions import Fraction

    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    value = Fraction(int(whole)) + Fraction(int(fixed or "0"), 10 ** len(fixed)) + Fraction(
        int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def strip_assignment(s: str) -> str:
    """`x=3` -> `3`, `\\theta\\in[0,1]` -> `[0,1]`: drop a lone variable on the left."""
    m = _ASSIGN.match(s)
    return s[m.end():] if m and "=" not in s[m.end():] else s


_OPEN = "([{"
_CLOSE = ")]}"


def split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` where not nested in brackets/braces."""
    parts, depth, start, i = [], 0, 0, 0
    n, k = len(s), len(sep)
    while i < n:
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += k
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _enclosed(s: str) -> bool:
    """True when s[0] opens a bracket whose match is the last character."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0:
                return i == len(s) - 1
    return False


_MATRIX = re.compile(r"\\begin\{([pbvB]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}", re.S)


def structure(s: str, depth: int = 0):
    """Tree of a normalized answer (see module docstring)."""
    s = s.strip()
    if depth > 8:
        return ("atom", s)
    m = _MATRIX.fullmatch(s)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        return ("matrix", [[structure(c, depth + 1) for c in r.split("&")] for r in rows])
    if "\\cup" in s:
        parts = split_top(s, "\\cup")
        if len(parts) > 1:
            return ("union", [structure(p, depth + 1) for p in parts])
    if s.startswith("{{") and s.endswith("}}") and _enclosed(s[1:-1]):
        inner = s[2:-2]
        return ("set", [structure(p, depth + 1) for p in split_top(inner, ",")] if inner else [])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _enclosed(s):
        items = split_top(s[1:-1], ",")
        if len(items) > 1:
            return ("tuple", s[0], [structure(p, depth + 1) for p in items], s[-1])
    if s.count("\\pm") == 1:  # 1\\pm\\sqrt{2}: the two values, in any order
        return ("list", [structure(s.replace("\\pm", "+"), depth + 1), structure(s.replace("\\pm", "-"), depth + 1)])
    for sep in (",", ";", "\\text{ and }", " and ", " or ", "\\text{or}"):
        parts = [p for p in split_top(s, sep)]
        if len(parts) > 1 and all(p.strip() for p in parts):
            return ("list", [structure(p, depth + 1) for p in parts])
    eq = split_top(s, "=")
    if len(eq) == 2 and eq[0] and eq[1]:
        return ("eq", structure(eq[0], depth + 1), structure(eq[1], depth + 1))
    return ("atom", s)
