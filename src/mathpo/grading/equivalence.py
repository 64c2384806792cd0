"""Is a predicted answer equivalent to the gold one? Used by grading.grade, maj@k, pairs and the demo.

Three tiers, cheapest first:
1. `fast(pred, gold)`: normalized strings (grading.normalize), then structures compared piece by
   piece (ordered tuples and intervals, unordered sets and bare lists, unions, matrices, equations,
   `x = 3` vs `3`) with every leaf valued by grading.numeric: exact Fractions where the value is
   rational, floats (relative 1e-9) where it involves roots or pi, and expressions in variables
   compared at fixed random points. Returns True/False, or None when it cannot decide.
2. `symbolic_many(pairs)`: Math-Verify (sympy) in worker processes with a wall-clock limit
   (grading.symbolic), for what tier 1 left undecided.
3. Verdicts are cached per (pred, gold).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from functools import lru_cache

from . import numeric
from .normalize import MAX_ANSWER, normalize, strip_assignment, structure

# Fixed random points for expressions in variables (Schwartz-Zippel style identity test).
_POINTS = [0.5772156649, 1.3247179572, 2.6854520010]
_TEXTY = re.compile(r"[A-Za-z][A-Za-z ]*")
_PCT = re.compile(r"^(.*?)%$")


def _close(a, b) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = float(a), float(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _values(s: str):
    """The value of s (at each random point when it has variables), or None if unsupported."""
    names = sorted(numeric.variables(s))
    if len(names) > 4:
        return None
    try:
        if not names:
            return [numeric.evaluate(s)]
        return [numeric.evaluate(s, {v: p * (1 + 0.37 * j) for j, v in enumerate(names)}) for p in _POINTS]
    except numeric.Unsupported:
        return None


def _atom_eq(p: str, g: str) -> bool | None:
    if p == g:
        return True
    p_pct, g_pct = _PCT.match(p), _PCT.match(g)
    if p_pct or g_pct:  # 50% == 50 (the gold dropped the sign) and 50% == 0.5
        pv = p_pct.group(1) if p_pct else p
        gv = g_pct.group(1) if g_pct else g
        first = _atom_eq(pv, gv)
        if first:
            return True
        scaled = _atom_eq(f"{pv}/100", gv) if p_pct else _atom_eq(pv, f"{gv}/100")
        return True if scaled else (None if first is None or scaled is None else False)
    if len(p) == 1 and len(g) == 1 and p.isalpha() and g.isalpha():  # choices (A) vs (B), or x vs y
        return False
    pn, gn = numeric.variables(p), numeric.variables(g)
    if pn == gn:
        pv, gv = _values(p), _values(g)
        if pv is not None and gv is not None:
            return all(_close(a, b) for a, b in zip(pv, gv))
    # Words ("Monday", "(C)", "yes"): compared as words, case-insensitive; a word is never a number.
    pw, gw = _word(p), _word(g)
    if pw is not None and gw is not None:
        return pw == gw
    if (pw is None) != (gw is None):
        other = g if pw is not None else p
        if not numeric.variables(other) and _values(other) is not None:
            return False
    if not pn and not gn:
        pv, gv = _values(p), _values(g)
        if pv is not None and gv is not None:
            return _close(pv[0], gv[0])
    return None


def _word(s: str) -> str | None:
    t = s.strip("(){}").strip().lower()
    return t if _TEXTY.fullmatch(t) and (len(t) > 1 or s.startswith("(")) else None


def _tri_all(results) -> bool | None:
    """All True -> True; any False -> False; else None."""
    unknown = False
    for r in results:
        if r is False:
            return False
        if r is None:
            unknown = True
    return None if unknown else True


def _unordered(ps: list, gs: list) -> bool | None:
    if len(ps) != len(gs):
        return False
    left = list(gs)
    unknown = False
    for p in ps:
        hit = None
        for j, g in enumerate(left):
            r = _node_eq(p, g)
            if r:
                hit = j
                break
            if r is None:
                unknown = True
        if hit is None:
            return None if unknown else False
        left.pop(hit)
    return True


def _node_eq(p, g) -> bool | None:
    kp, kg = p[0], g[0]
    if kp == "atom" and kg == "atom":
        return _atom_eq(p[1], g[1])
    if kp == "eq" and kg != "eq":
        return _node_eq(p[2], g) if _is_name(p[1]) else None
    if kg == "eq" and kp != "eq":
        return _node_eq(p, g[2]) if _is_name(g[1]) else None
    if kp == "eq" and kg == "eq":
        if _is_name(p[1]) and p[1] == g[1]:  # `y = ...` on both sides: compare what y equals
            return _node_eq(p[2], g[2])
        same = _tri_all([_node_eq(p[1], g[1]), _node_eq(p[2], g[2])])
        return True if same else None  # equations may be rearranged: let sympy decide
    if kp == "tuple" and kg == "tuple":
        if len(p[2]) != len(g[2]):
            return False
        if (p[1], p[3]) != (g[1], g[3]):
            return False
        return _tri_all(_node_eq(a, b) for a, b in zip(p[2], g[2]))
    if kp == "matrix" and kg == "matrix":
        if [len(r) for r in p[1]] != [len(r) for r in g[1]]:
            return False
        return _tri_all(_node_eq(a, b) for ra, rb in zip(p[1], g[1]) for a, b in zip(ra, rb))
    if kp in ("set", "list", "union") and kg in ("set", "list", "union") and (kp == kg or "list" in (kp, kg)):
        return _unordered(p[1], g[1])
    if {kp, kg} == {"list", "tuple"}:  # `1, 2` for `(1, 2)`: same order required
        ps = p[1] if kp == "list" else p[2]
        gs = g[1] if kg == "list" else g[2]
        return False if len(ps) != len(gs) else _tri_all(_node_eq(a, b) for a, b in zip(ps, gs))
    if kp == "set" and kg == "atom" and len(p[1]) == 1:
        return _node_eq(p[1][0], g)
    if "atom" in (kp, kg):
        return None if "matrix" in (kp, kg) else False
    return None


def _is_name(node) -> bool:
    return node[0] == "atom" and bool(re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?|\\[a-zA-Z]+", node[1]))


def fast(pred: str, gold: str) -> bool | None:
    """Tier 1 (see module docstring): True, False, or None when undecided."""
    if len(pred) > MAX_ANSWER or len(gold) > MAX_ANSWER:  # not cached: keeps the cache small
        return _fast(pred[: 4 * MAX_ANSWER], gold[: 4 * MAX_ANSWER])
    return _fast_cached(pred, gold)


def _fast(pred: str, gold: str) -> bool | None:
    p, g = normalize(pred), normalize(gold)
    if not p:
        return False
    if p == g:
        return True
    if len(p) >= MAX_ANSWER or len(g) >= MAX_ANSWER:
        return False
    if "=" not in g:
        p = strip_assignment(p)
    if p == g:
        return True
    try:
        return _node_eq(structure(p), structure(g))
    except RecursionError:
        return None


_fast_cached = lru_cache(maxsize=65536)(_fast)


def symbolic_forms(pred: str, gold: str) -> tuple[str, str]:
    """What tier 2 compares: normalized strings, with `x =` dropped when gold has no equation."""
    p, g = normalize(pred), normalize(gold)
    if "=" not in g:
        p = strip_assignment(p)
    return p, g


def equivalent(pred: str | None, gold: str, timeout: float | None = None) -> bool:
    """True when pred is the same answer as gold (fast path, then sympy under a time limit)."""
    return check(pred, gold, timeout)[0]


def check(pred: str | None, gold: str, timeout: float | None = None) -> tuple[bool, bool]:
    """(equivalent, timed_out) for one pair."""
    if pred is None or gold is None:
        return False, False
    verdict = fast(pred, str(gold))
    if verdict is not None:
        return verdict, False
    from .symbolic import symbolic_many

    return symbolic_many([symbolic_forms(pred, str(gold))], timeout=timeout)[0]
