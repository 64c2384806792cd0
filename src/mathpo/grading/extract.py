"""Final-answer extraction from solutions and completions.

`last_boxed` and `after_hashes` are also used by the dataset loader to read gold answers.
"""

from __future__ import annotations

import re

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last brace-balanced \\boxed{...} (or \\fbox{...}); None if there is none."""
    found = None
    for m in _BOX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "\\" and i + 1 < len(text):  # skip escaped braces like \{
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(c, 0)
            i += 1
        if depth == 0:
            found = text[m.end(): i - 1].strip()
    return found


_HASHES = re.compile(r"####\s*([^\n]*)")


def after_hashes(text: str) -> str | None:
    """GSM8K's final answer: the text after the first `#### ` up to the end of its line."""
    m = _HASHES.search(text)
    if not m:
        return None
    value = m.group(1).strip()
    return value or None
