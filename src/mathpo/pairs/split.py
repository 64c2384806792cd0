"""Split a solution into reasoning steps for Step-DPO data (`mathpo pairs --kind step`).

A solution is cut into contiguous segments whose concatenation is the original text, byte for
byte, so the text "after j steps" is always an exact prefix of what the model wrote (GSM8K's
`<<48/2=24>>` annotations and all spacing stay intact). Modes:
- `markers`: cut before each line-initial "Step k:" marker (also "**Step k:**", "## Step k.");
  a step is `marker + body`; text before the first cut belongs to the first step. With the
  `-step` templates the first "Step 1:" is part of the prompt, so the first step has no marker.
- `lines`: one step per line (blank lines stay with the line before).
- `auto` (default): markers when they give at least two steps, else lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODES = ("auto", "markers", "lines")
MARKER = re.compile(r"(?m)^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?Step[ \t]+\d+[ \t]*(?:\*\*)?[:.](?:\*\*)?")


@dataclass(frozen=True)
class Step:
    marker: str  # "Step 3:" (with any leading blanks) that opens the step; "" when there is none
    body: str  # the rest of the step, its trailing newline(s) included

    @property
    def text(self) -> str:
        return self.marker + self.body


def _by_markers(text: str) -> list[Step]:
    cuts = [m for m in MARKER.finditer(text) if text[:m.start()].strip()]
    starts = [0] + [m.start() for m in cuts]
    ends = starts[1:] + [len(text)]
    lead = next((m for m in MARKER.finditer(text) if not text[:m.start()].strip()), None)
    head = lead.end() if lead and lead.end() <= ends[0] else 0  # the solution opens with "Step 1:"
    steps = [Step(text[:head], text[head:ends[0]])]
    for m, end in zip(cuts, ends[1:]):
        steps.append(Step(text[m.start():m.end()], text[m.end():end]))
    return steps


def _by_lines(text: str) -> list[Step]:
    pieces = text.splitlines(keepends=True)
    steps: list[str] = []
    lead = ""
    for piece in pieces:
        if not piece.strip():
            if steps:
                steps[-1] += piece
            else:
                lead += piece
            continue
        steps.append(lead + piece)
        lead = ""
    if lead:
        steps.append(lead)
    return [Step("", s) for s in steps]


def split(text: str, mode: str = "auto") -> list[Step]:
    """Steps of `text`; `"".join(s.text for s in split(text)) == text` always holds."""
    if mode not in MODES:
        raise ValueError(f"unknown split mode '{mode}' ({', '.join(MODES)})")
    if not text:
        return []
    if mode in ("auto", "markers"):
        steps = _by_markers(text)
        if mode == "markers" or len(steps) > 1:
            return steps
    return _by_lines(text)


def used_mode(steps: list[Step]) -> str:
    return "markers" if any(s.marker for s in steps) else "lines"


def prefix(steps: list[Step], j: int) -> str:
    """The answer text after the first j steps, ending with step j+1's marker when it has one,
    so a continuation sampled from it writes step j+1."""
    head = "".join(s.text for s in steps[:j])
    return head + (steps[j].marker if j < len(steps) else "")


def first_step(continuation: str, mode: str) -> str:
    """The step a continuation starts with (the text up to its next step)."""
    steps = split(continuation, "markers" if mode == "markers" else "lines")
    return steps[0].body if steps else ""
