"""A small, safe evaluator of normalized LaTeX answers: the fast path of grading.equivalence.

`evaluate(s, point)` parses `s` (numbers, + - * / ^ !, `\\frac`, `\\sqrt`, `\\binom`, `\\pi`, `\\cdot`,
implicit products, `%`, a few functions, single-letter variables taken from `point`) and returns an
exact `Fraction` whenever the value is rational (so `1/2004!` and `1/2006!` stay apart, and `8000`,
`8000.0` and `\\frac{16000}{2}` are the same number), a float otherwise, or raises `Unsupported`
for anything it does not know (the caller then asks sympy). Sizes are capped: no exact power with
more than MAX_BITS bits, no factorial above MAX_FACTORIAL, no nesting deeper than MAX_DEPTH.
It never hands model text to Python's eval: model text is data.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_LEN = 400
MAX_BITS = 200_000
MAX_FACTORIAL = 3_000
MAX_DEPTH = 60


class Unsupported(Exception):
    """The expression is outside what this evaluator decides (or too big, or undefined)."""


_TOKEN = re.compile(r"\d+(?:\.\d+)?|\\[a-zA-Z]+|[a-zA-Z]|[-+*/^_!(){}\[\]|%']|\S")
_FUNCS = {"\\sin": math.sin, "\\cos": math.cos, "\\tan": math.tan, "\\ln": math.log, "\\log": math.log10,
          "\\exp": math.exp, "\\arcsin": math.asin, "\\arccos": math.acos, "\\arctan": math.atan,
          "\\sec": lambda x: 1 / math.cos(x), "\\csc": lambda x: 1 / math.sin(x), "\\cot": lambda x: 1 / math.tan(x)}
_CONSTS = {"\\pi": math.pi, "\\infty": math.inf}
_MUL = {"*", "\\cdot", "\\div", "/"}


def variables(s: str) -> set[str]:
    """Single-letter variable names in s (letters outside `\\commands`)."""
    return set(re.findall(r"(?<![\\a-zA-Z])[a-zA-Z](?![a-zA-Z])", re.sub(r"\\[a-zA-Z]+", " ", s)))


def _mul(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a * b
    return float(a) * float(b)


def _div(a, b):
    if b == 0:
        raise Unsupported("division by zero")
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a / b
    return float(a) / float(b)


def _add(a, b, sign=1):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a + sign * b
    return float(a) + sign * float(b)


def _exact_nth(q: Fraction, n: int) -> Fraction | None:
    if q < 0:
        return None
    num, den = q.numerator, q.denominator
    rn, rd = _iroot(num, n), _iroot(den, n)
    return Fraction(rn, rd) if rn ** n == num and rd ** n == den else None


def _iroot(x: int, n: int) -> int:
    if x < 2:
        return x
    r = int(round(x ** (1.0 / n))) if x.bit_length() < 1000 else int(math.isqrt(x)) if n == 2 else 0
    for c in (r - 1, r, r + 1):
        if c >= 0 and c ** n == x:
            return c
    return r


def _pow(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if b.denominator == 1:
            e = b.numerator
            bits = max(abs(a.numerator).bit_length(), a.denominator.bit_length(), 1)
            if abs(e) * bits > MAX_BITS:
                raise Unsupported("power too large to keep exact")
            if a == 0 and e < 0:
                raise Unsupported("division by zero")
            return a ** e
        if b.denominator <= 12 and abs(b.numerator) <= 64:
            root = _exact_nth(a, b.denominator)
            if root is not None:
                return _pow(root, Fraction(b.numerator))
    try:
        x, y = float(a), float(b)
        if x < 0 and not float(y).is_integer():
            raise Unsupported("complex power")
        out = x ** y
    except (OverflowError, ZeroDivisionError) as e:
        raise Unsupported(str(e)) from None
    if isinstance(out, complex) or math.isnan(out):
        raise Unsupported("complex or undefined")
    return out


def _factorial(a):
    if not (isinstance(a, Fraction) and a.denominator == 1 and 0 <= a <= MAX_FACTORIAL):
        raise Unsupported("factorial")
    return Fraction(math.factorial(int(a)))


class _Parser:
    def __init__(self, s: str, point: dict[str, float]):
        self.toks = _TOKEN.findall(s)
        self.i = 0
        self.point = point
        self.depth = 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        t = self.peek()
        if t is None or (want is not None and t != want):
            raise Unsupported(f"expected {want!r}, got {t!r}")
        self.i += 1
        return t

    def parse(self):
        value = self.expr()
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r}")
        return value

    def expr(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsupported("too deep")
        value = self.term()
        while self.peek() in ("+", "-", "\\pm"):
            op = self.take()
            if op == "\\pm":
                raise Unsupported("plus-minus")
            value = _add(value, self.term(), 1 if op == "+" else -1)
        self.depth -= 1
        return value

    def term(self):
        value = self.unary()
        while True:
            t = self.peek()
            if t in _MUL:
                self.take()
                rhs = self.unary()
                value = _div(value, rhs) if t in ("/", "\\div") else _mul(value, rhs)
            elif t is not None and self._starts_factor(t):
                value = _mul(value, self.power())  # implicit product: 2\sqrt{3}, 3x, (a)(b)
            else:
                return value

    @staticmethod
    def _starts_factor(t: str) -> bool:
        return t[0].isdigit() or t[0].isalpha() or t in ("(", "{", "[") or (
            t.startswith("\\") and (t in _FUNCS or t in _CONSTS or t in ("\\frac", "\\sqrt", "\\binom")))

    def unary(self):
        if self.peek() in ("-", "+"):
            sign = self.take()
            value = self.unary()
            return _mul(Fraction(-1), value) if sign == "-" else value
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            exp = self.unary() if self.peek() in ("-", "+") else self.power()
            base = _pow(base, exp)
        return base

    def postfix(self):
        value = self.primary()
        while self.peek() in ("!", "%", "'"):
            t = self.take()
            if t == "'":
                raise Unsupported("prime")
            value = _factorial(value) if t == "!" else _div(value, Fraction(100))
        return value

    def group(self):
        t = self.take()
        close = {"(": ")", "{": "}", "[": "]"}.get(t)
        if close is None:
            return self._atom(t)
        value = self.expr()
        self.take(close)
        return value

    def primary(self):
        t = self.take()
        if t[0].isdigit():
            return Fraction(t)
        if t in ("(", "{", "["):
            close = {"(": ")", "{": "}", "[": "]"}[t]
            value = self.expr()
            self.take(close)
            return value
        if t == "|":
            value = self.expr()
            self.take("|")
            return abs(value)
        return self._atom(t)

    def _atom(self, t: str):
        if t[0].isdigit():
            return Fraction(t)
        if t.isalpha() and len(t) == 1:
            if t not in self.point:
                raise Unsupported(f"unknown variable {t}")
            return self.point[t]
        if t in _CONSTS:
            return _CONSTS[t]
        if t == "\\frac":
            return _div(self.group(), self.group())
        if t == "\\binom":
            n, k = self.group(), self.group()
            if not all(isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= MAX_FACTORIAL for v in (n, k)):
                raise Unsupported("binom")
            return Fraction(math.comb(int(n), int(k)))
        if t == "\\sqrt":
            n = 2
            if self.peek() == "[":
                self.take()
                idx = self.expr()
                self.take("]")
                if not (isinstance(idx, Fraction) and idx.denominator == 1 and 2 <= idx <= 64):
                    raise Unsupported("root index")
                n = int(idx)
            arg = self.group()
            if arg < 0:
                raise Unsupported("root of a negative number")
            return _pow(arg, Fraction(1, n))
        if t in _FUNCS:
            if self.peek() == "^":  # \sin^2 x
                raise Unsupported("function power")
            arg = self.power()
            try:
                return _FUNCS[t](float(arg))
            except (ValueError, ZeroDivisionError, OverflowError) as e:
                raise Unsupported(str(e)) from None
        raise Unsupported(f"unknown token {t!r}")


def evaluate(s: str, point: dict[str, float] | None = None):
    """Fraction (exact) or float value of s; raises Unsupported (see module docstring)."""
    if not s or len(s) > MAX_LEN:
        raise Unsupported("empty or too long")
    try:
        return _Parser(s, point or {}).parse()
    except (RecursionError, ValueError, ZeroDivisionError, OverflowError, TypeError) as e:
        raise Unsupported(str(e)) from None
