"""Near-duplicate detection for `mathpo pairs`: Jaccard similarity of token sets (DPO-ST's rule).

Tokens are words, numbers and single punctuation marks (lower-cased), so "16 - 3 = 13" and
"16-3=13" count as the same solution text while a different number makes them differ.
Used by `pairs.dpo` (dedup and least-similar pair choice), `pairs.rft` and step rectification.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\w+|[^\w\s]")


def token_set(text: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b|; two empty texts are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def dedup(texts: list[str], threshold: float) -> tuple[list[int], int, int]:
    """Indices of the texts kept, in order: exact duplicates (after strip) and texts whose
    similarity to an already kept one is above `threshold` are dropped; earlier texts win.

    Returns (kept indices, exact duplicates dropped, near duplicates dropped).
    """
    seen: set[str] = set()
    kept: list[int] = []
    sets: list[frozenset[str]] = []
    exact = near = 0
    for i, text in enumerate(texts):
        key = text.strip()
        if key in seen:
            exact += 1
            continue
        seen.add(key)
        s = token_set(text)
        if any(jaccard(s, other) > threshold for other in sets):
            near += 1
            continue
        kept.append(i)
        sets.append(s)
    return kept, exact, near
