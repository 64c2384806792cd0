"""Pair files as training input: recognise the three row kinds, read external files unchanged
(Math-Step-DPO-10K's step rows, DPO-ST's `{prompt, chosen, rejected}` files), and render the
exact prompt text of a step row. Used by `mathpo train` and the loop.

Kinds, by their fields:
- `step`: prompt (raw question), initial_reason_steps, chosen, rejected (+ full_chosen,
  full_rejected, answer, dataset) -- Math-Step-DPO-10K and `mathpo pairs --kind step`;
- `dpo`: prompt, chosen, rejected -- DPO-ST and `mathpo pairs --kind dpo`;
- `rft`: prompt, completion -- `mathpo pairs --kind rft`.
Files: whatever `mathpo.data.files.read_file` reads (.jsonl, .json rows or columns, .csv, .parquet).
Rows keep every field; a row without `id` gets its line number as one.
"""

from __future__ import annotations

from pathlib import Path

from .. import prompts
from ..data.files import read_file
from ..errors import UserError

KINDS = {
    "step": ("prompt", "initial_reason_steps", "chosen", "rejected"),
    "dpo": ("prompt", "chosen", "rejected"),
    "rft": ("prompt", "completion"),
}


def kind_of(row: dict) -> str | None:
    """The most specific kind whose fields the row has (step before dpo)."""
    return next((k for k, fields in KINDS.items() if all(f in row for f in fields)), None)


def load_pairs(path: str | Path, kind: str | None = None) -> tuple[str, list[dict]]:
    """(kind, rows) of a pair file; every row must be of one kind (`kind` if given)."""
    path = Path(path)
    rows = read_file(path)
    if not rows:
        raise UserError(f"{path}: no rows")
    want = kind or kind_of(rows[0])
    if want not in KINDS:
        fields = " / ".join(", ".join(f) for f in KINDS.values())
        raise UserError(f"{path}: rows are not pairs; expected fields {fields}")
    for i, r in enumerate(rows, 1):
        missing = [f for f in KINDS[want] if f not in r]
        if missing:
            raise UserError(f"{path}: row {i} lacks {', '.join(missing)} for {want} pairs")
        bad = [f for f in KINDS[want] if not isinstance(r[f], str | list)]
        if bad:
            raise UserError(f"{path}: row {i}: {', '.join(bad)} must be text or a list of chat messages")
        r.setdefault("id", str(i))
    return want, rows


def step_prompt(tokenizer, row: dict, template: str | prompts.Template) -> str:
    """The exact text a step row's chosen/rejected continue: the question (`prompt`) rendered with
    `template`, whose prompt_end is replaced by the row's `initial_reason_steps`. mathpo's rows
    start with the prompt_end; rows from elsewhere (Math-Step-DPO-10K: "Let's think step by
    step.\nStep 1: ...") may lack its leading space or its opener, which are put back. Used by
    `mathpo pairs --kind step` (rollouts) and `mathpo train` (Step-DPO prompts) alike."""
    t = prompts.get(template) if isinstance(template, str) else template
    base = prompts.render(tokenizer, row["prompt"], t)
    start, steps = t.prompt_end, row["initial_reason_steps"] or ""
    head = base[:len(base) - len(start)] if start else base
    if start and not steps.startswith(start):
        core = start.lstrip()
        lead = start[:len(start) - len(core)]
        steps = (lead + steps) if (not core or steps.startswith(core)) else (start + steps)
    elif not start and steps:
        steps = t.as_answer(steps)  # "Answer:" + " He has ...", as the model wrote it
    return head + steps
