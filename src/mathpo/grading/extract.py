"""Final-answer extraction from solutions and completions (used by `mathpo grade`, `eval`, `pairs`).

`extract_answer(completion) -> (pred, strict)` takes, in priority order:
1. the last brace-balanced `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`),
2. GSM8K's `#### N` (the first such marker; a Markdown heading `#### Step 1: ...` is none),
3. Minerva's "The final answer is $X$. I hope it is correct.",
4. "The (final) answer is X" / "Final Answer: X",
and only then 5. the last number (strict = False: no explicit marker).
Before that, run-on text (a model that finishes and then starts a new "Question: ...") is cut off,
so numbers and boxes of an invented next problem never become the answer.

`last_boxed` and `after_hashes` are also used by the dataset loader to read gold answers.
"""

from __future__ import annotations

import re

MAX_COMPLETION = 200_000  # characters looked at; longer completions are cut (keeps every scan bounded)

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed\s+([^\s${}\\]+)")
_BRACE = re.compile(r"\\.|[{}]", re.S)


def _brace_matches(text: str) -> dict[int, int]:
    """Position of each `{` -> its matching `}`, in one linear pass (escaped braces skipped)."""
    stack, out = [], {}
    for m in _BRACE.finditer(text):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            out[stack.pop()] = m.start()
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last brace-balanced \\boxed{...} (or \\fbox{...}, or `\\boxed 5`); None if none.

    'Last' means the box that closes last; of nested boxes the outer one. Linear time, so thousands of
    unbalanced braces cannot make it quadratic.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    matches = None
    best: tuple[int, int, str] | None = None  # (end, -start, content)
    for m in _BOX.finditer(text):
        if matches is None:
            matches = _brace_matches(text)
        close = matches.get(m.end() - 1)
        if close is not None:
            cand = (close, -m.start(), text[m.end(): close].strip())
            if best is None or cand[:2] > best[:2]:
                best = cand
    for m in _BOX_BARE.finditer(text):
        cand = (m.end(), -m.start(), m.group(1).rstrip(".,;"))
        if best is None or cand[:2] > best[:2]:
            best = cand
    return best[2] if best else None


_HASHES = re.compile(r"#{4,}\s*([^\n]*)")  # a fifth "#" (`##### 17`) is part of the marker
_ANSWER_LABEL = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:)\s*", re.I)
# Markdown headings written with `####`: a section word, maybe numbered ("Step 1: Find the total",
# "Solution", "Step-by-step explanation") ...
_SECTION = re.compile(
    r"(?:step|part|case|stage|phase|section|solution|method|approach|explanation|calculation|conclusion"
    r"|summary|verification|analysis|reasoning|overview|strategy|understanding|given|plan|setup)s?\b"
    r"\s*(?P<num>\d+[a-z]?\b|[ivx]+\b)?\s*[:.)\-\u2013\u2014]*\s*(?P<rest>.*)", re.I | re.S)
# ... or a line of plain words with no number in it ("Calculating the total cost", "Final Answer").
_PLAIN_WORDS = re.compile(r"[A-Za-z][A-Za-z'\u2019\s,;:.!?()&/\-\u2013\u2014]*")
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million billion half third quarter".split())
_BARE_NUMBER = re.compile(r"\$?\s*-?\s*\$?[\d,]*\.?\d+(?:/\d+)?\s*%?\.?")


def _is_heading(value: str) -> bool:
    """True when the text after a `####` is a Markdown heading, not a final answer: empty (after an
    "Answer:" label), a section word with at most a step number and a title ("Step 2: Add the costs",
    but not "Solution: 42" or "Step 3: 42"), or two or more plain words with no number ("Calculating
    the total cost"; one word such as "Tuesday", or number words such as "twenty four", stay answers)."""
    value = _ANSWER_LABEL.sub("", value.strip().strip("*_").strip())
    if not value:
        return True
    m = _SECTION.fullmatch(value)
    if m:
        rest = m.group("rest").strip("*_ ")
        if m.group("num"):  # "Step 1: 3 + 4 = 7" is a step; "Step 3: 42" may be the answer
            if not _BARE_NUMBER.fullmatch(rest):
                return True
        elif not rest or (rest[0].isalpha() and not re.search(r"\d", rest)):
            return True
    if _PLAIN_WORDS.fullmatch(value):
        words = re.findall(r"[A-Za-z]+", value.lower())
        return (len(words) >= 2 or value.lower().strip(" :.") == "answer") and not _NUMBER_WORDS.intersection(words)
    return False


def after_hashes(text: str) -> str | None:
    """GSM8K's final answer: the text after the first `#### ` marker up to the end of its line.

    Markers whose text is a Markdown heading (`#### Step 1: Find the total`, `#### Solution`, see
    `_is_heading`) are passed over; otherwise the first marker wins, so the markers a model writes
    after its answer (answering again, or a new problem of its own) never replace it.
    """
    for m in _HASHES.finditer(text):
        value = m.group(1).strip()
        if not _is_heading(value):
            return value
    return None


# Where a completion runs on into a new problem: a line that starts a new question or turn.
_RUN_ON = re.compile(
    r"\n\s*(?:Question|Q|Problem|Human|User|Instruction|### Instruction|Input)\s*:"
    r"|<\|(?:im_end|endoftext|eot_id|end|user)\|>|</s>|<\|im_start\|>")
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?!\w)|(?<![\w.])-?\.\d+")
_MINERVA = re.compile(r"final answer is\s*\$((?:\\\$|[^$])+)\$\s*\.?\s*I hope", re.I)
_ANSWER_IS = re.compile(
    r"(?:the\s+(?:final\s+)?answer\s+(?:is|=|will be|would be)|final\s+answer\s*:|^\s*answer\s*:)\s*:?\s*(.+)",
    re.I | re.M)
_HASH_NUM = re.compile(r"^(?:-\s*\$|\$?\s*-?)\s*[\d,]*\.?\d+(?:/\d+)?\s*%?")  # `-$5` and `$-5` keep their sign
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean(text: str) -> str:
    """Cut to MAX_COMPLETION characters; drop control characters (they carry no answer)."""
    return _CONTROL.sub(" ", text[:MAX_COMPLETION])


def cut_run_on(text: str) -> str:
    """The completion up to the first point where it starts a new question or chat turn."""
    m = _RUN_ON.search(text)
    return text[: m.start()] if m and text[: m.start()].strip() else text


def _answer_is(text: str) -> str | None:
    """The last 'the answer is X' in text: X up to the end of its sentence or line."""
    found = None
    for m in _ANSWER_IS.finditer(text):
        found = m.group(1)
    if found is None:
        return None
    found = found.strip()
    if found.startswith("$") and "$" in found[1:]:  # inline math: take it whole
        found = found[1: found.index("$", 1)]
    elif found.startswith("\\(") and "\\)" in found:
        found = found[2: found.index("\\)")]
    else:
        found = re.split(r"\.\s|\.$|;|\n", found, maxsplit=1)[0]
    found = found.strip().rstrip(".").strip()
    return found or None


def last_number(text: str) -> str | None:
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


def extract_answer(completion: str) -> tuple[str | None, bool]:
    """(answer, strict): strict when an explicit marker (boxed, ####, 'answer is') gave it."""
    text = cut_run_on(clean(completion))
    boxed = last_boxed(text)
    if boxed:
        return boxed, True
    hashes = after_hashes(text)
    if hashes:
        hashes = _ANSWER_LABEL.sub("", hashes)  # `#### Answer: 17`
        num = _HASH_NUM.match(hashes)  # `#### 18 Question: ...` on one line: keep the number only
        if num:
            return num.group().strip(), True
        nums = _NUMBER.findall(hashes)  # `#### Ava saves $18800`: one number on the line is the answer
        return (nums[0] if len(nums) == 1 else hashes), True
    m = None
    for m in _MINERVA.finditer(text):  # noqa: B007 (the loop keeps the last match in m)
        pass
    if m:
        return m.group(1).strip(), True
    said = _answer_is(text)
    if said:
        return said, True
    return last_number(text), False
