"""The calculator in the loop (DPO-ST's method, without its `eval` hole).

GSM8K-style solutions annotate arithmetic as `<<48/2=24>>`. Once a row has written `<<expr=`, the
result of `expr` is forced token by token and the annotation closed with `>>`; generation never stops,
so it works at any batch size, when sampling, and with every row at its own point.

- `evaluate(expr)`: a safe arithmetic evaluator over Python's parser (`ast.parse` only builds a
  tree; nothing is executed). Numbers, `+ - * / // % **`, parentheses, unary minus/plus; no names,
  calls, attributes or subscripts; bounded text length, operand size and exponent, so its time is
  bounded too. Anything else gives None ("no result"): generation goes on unforced.
- `pending(text)`: what is still to be forced when `text` ends inside an annotation's result.
- `CalculatorLogitsProcessor(tokenizer)`: the same forcing for plain `model.generate` (the web demo);
  each row's state comes from its own decoded tail, so left padding and any batch work.

Used by the hf backend (`mathpo sample/eval --calculator`) and `mathpo serve`.
"""

from __future__ import annotations

import ast
import math
import operator
import re

MAX_CHARS = 200  # longer "expressions" are not arithmetic a solution step would write
MAX_ABS = 10 ** 18  # every literal and intermediate value stays within this
MAX_POW_BITS = 64  # |base| ** exp may not need more bits than this
OPEN, CLOSE = "<<", ">>"

_ALLOWED_CHARS = re.compile(r"^[0-9.+\-*/%() \t]*$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # 1,000 -> 1000 (a comma elsewhere is refused)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


class _Refused(Exception):
    pass


def _check(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise _Refused
    if abs(value) > MAX_ABS:
        raise _Refused
    return value


def _pow(base, exp):
    if abs(exp) > MAX_POW_BITS:
        raise _Refused
    if base != 0 and abs(exp) * math.log2(max(abs(base), 1.0)) > MAX_POW_BITS:
        raise _Refused
    if isinstance(exp, float) and base < 0:
        raise _Refused  # a complex number
    return base ** exp


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # not bool, complex, str
        return _check(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check(_pow(left, right))
        return _check(_BINOPS[type(node.op)](left, right))
    raise _Refused  # names, calls, attributes, subscripts, comparisons, anything else


def format_number(value) -> str:
    """Within 1e-4 of an integer: the integer; otherwise rounded to 2 decimals (`4.8`, `3.33`)."""
    if isinstance(value, int):
        return str(value)
    nearest = round(value)
    if abs(value - nearest) < 1e-4:
        return str(int(nearest))
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def evaluate(expr: str) -> str | None:
    """The value of an arithmetic expression as the calculator prints it, or None if refused."""
    if not isinstance(expr, str) or len(expr) > MAX_CHARS:
        return None
    expr = _THOUSANDS.sub("", expr).strip()
    if not expr or not _ALLOWED_CHARS.match(expr):
        return None  # cheap first gate: letters, quotes, brackets, underscores never reach the parser
    try:
        return format_number(_eval(ast.parse(expr, mode="eval")))
    except (_Refused, SyntaxError, ZeroDivisionError, OverflowError, ValueError, TypeError, RecursionError,
            MemoryError):
        return None


def pending(text: str) -> str | None:
    """When `text` ends inside `<<expr=partial`, the rest of `result>>` still to write; else None.

    None also when the expression has no result or the partial result already disagrees with it.
    """
    start = text.rfind(OPEN)
    if start < 0:
        return None
    inner = text[start + len(OPEN):]
    eq = inner.find("=")
    if eq < 0 or CLOSE in inner:
        return None
    result = evaluate(inner[:eq])
    if result is None:
        return None
    target, partial = result + CLOSE, inner[eq + 1:]
    if not target.startswith(partial):
        return None
    return target[len(partial):]


class CalculatorLogitsProcessor:
    """A transformers logits processor forcing calculator results (for plain `model.generate`).

    `model.generate(..., logits_processor=[CalculatorLogitsProcessor(tok)])`. At every step each row's
    last `tail_tokens` tokens are decoded; a row inside `<<expr=` gets all its probability on the
    token that continues `result>>`. Rows are independent; padding on the left is harmless.
    """

    def __init__(self, tokenizer, tail_tokens: int = 64):
        self.tok = tokenizer
        self.tail_tokens = tail_tokens
        self._first_token: dict[str, int] = {}

    def next_token(self, text: str) -> int | None:
        rest = pending(text)
        if not rest:
            return None
        if rest not in self._first_token:
            self._first_token[rest] = self.tok(rest, add_special_tokens=False).input_ids[0]
        return self._first_token[rest]

    def __call__(self, input_ids, scores):
        for row, ids in enumerate(input_ids[:, -self.tail_tokens:].tolist()):
            forced = self.next_token(self.tok.decode(ids, skip_special_tokens=True))
            if forced is not None:
                value = scores.new_tensor(0.0)
                scores[row].fill_(float("-inf"))
                scores[row, forced] = value
        return scores
