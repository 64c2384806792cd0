"""Cut-off final answers: a completion whose answer was never finished is never graded correct.

Used by grading.grade / grade_rows (`mathpo grade`, `eval`, the loop) and by the pairs pools
(`mathpo pairs`), which never take a cut-off row as a positive, whatever its `correct` says.

`cut_off(completion, pred, finish)` returns the reason, or None when the answer is whole:
- `unbalanced`: the extracted answer has unbalanced braces (`\\frac{1}{2`), or a `\\boxed{` after
  the last closed box never closes (`... \\boxed{12`: the flexible fallback would take "12");
- `repetition`: the text ends in a degenerate loop (one short unit repeated, `\\boxed{\\boxed{...`,
  `5 5 5 5 ...`), so whatever number it ends on is no answer;
- `length`: generation stopped at the token limit (`finish == "length"`) and the last answer marker
  never closed (`#### 12` or "the answer is 12" with nothing after it: 12 may be the start of 125),
  or there is no marker at all (the last number is then a mid-solution number, not an answer).
"""

from __future__ import annotations

import re

from .extract import _BOX, _BRACE, _brace_matches, clean, cut_run_on

TAIL = 4096  # characters looked at for a loop (keeps the check linear and cheap)
MIN_REPEATS, MIN_SPAN, MAX_UNIT = 6, 48, 64

_MARKERS = re.compile(r"\\(?:boxed|fbox)\b|#{4,}|final answer is|the (?:final )?answer (?:is|=)|final answer\s*:|"
                      r"^\s*answer\s*:", re.I | re.M)
_CLOSED_LINE = re.compile(r"#{4,}[^\n]*\n|(?:answer (?:is|=)|answer\s*:)[^\n]*?(?:\.\s|[\n;])", re.I)


def _balanced(text: str) -> bool:
    depth = 0
    for m in _BRACE.finditer(text):
        c = m.group()
        depth += c == "{"
        depth -= c == "}"
        if depth < 0:
            return False
    return depth == 0


def _unclosed_box(text: str) -> bool:
    """A `\\boxed{` opening that never closes and comes after every closed box."""
    opens = [m.end() - 1 for m in _BOX.finditer(text)]
    if not opens:
        return False
    matches = _brace_matches(text)
    closed_ends = [matches[o] for o in opens if o in matches]
    last_open_unclosed = max((o for o in opens if o not in matches), default=None)
    return last_open_unclosed is not None and last_open_unclosed > max(closed_ends, default=-1)


def looping(text: str) -> bool:
    """The text ends in one unit of <= MAX_UNIT characters repeated >= MIN_REPEATS times over
    >= MIN_SPAN characters (trailing whitespace ignored)."""
    t = text[-TAIL:].rstrip()
    for p in range(1, MAX_UNIT + 1):
        reps = max(MIN_REPEATS, -(-MIN_SPAN // p))
        if reps * p > len(t):
            break
        unit = t[-p:]
        if unit.strip() and t.endswith(unit * reps):
            return True
    return False


def _marker_closed(text: str) -> bool | None:
    """None when the text has no answer marker; else whether the last one is finished (a closed
    box, or a `####` / 'answer is' line that ends before the text does)."""
    last = None
    for last in _MARKERS.finditer(text):  # noqa: B007 (the loop keeps the last match in last)
        pass
    if last is None:
        return None
    rest = text[last.start():]
    if rest.startswith(("\\boxed", "\\fbox")):
        opening = _BOX.match(rest)
        if opening is None:  # `\boxed 5`: closed by whatever follows the token
            return bool(re.match(r"\\boxed\s+[^\s${}\\]+\s*\S", rest))
        return (opening.end() - 1) in _brace_matches(rest)
    return _CLOSED_LINE.search(rest) is not None


def cut_off(completion: str, pred: str | None = None, finish: str | None = None) -> str | None:
    """Why the final answer is cut off (`unbalanced`, `repetition`, `length`), or None."""
    text = cut_run_on(clean(completion or ""))
    if (pred is not None and not _balanced(pred)) or _unclosed_box(text):
        return "unbalanced"
    if looping(text):
        return "repetition"
    if finish == "length" and text.strip():
        ran_on = len(text) < len(clean(completion or ""))  # a new question started: the answer came before it
        if not ran_on and _marker_closed(text) is not True:
            return "length"
    return None
