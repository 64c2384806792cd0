"""Turn training rows into the prompt/completion strings TRL's trainers take (`mathpo train`).

One rule for prompts, so training sees exactly what `mathpo sample` saw:
- a row with `prompt` (and no `initial_reason_steps`) is used as is: it is already a rendered prompt
  (the text up to where the answer starts, as `mathpo sample` writes it);
- a row with `question` (and no `prompt`) is rendered with `mathpo.prompts.render(tok, question, template)`;
- a Step-DPO row (Math-Step-DPO-10K schema: `prompt` = the question, `initial_reason_steps`, `chosen`,
  `rejected` = single steps, `full_chosen`, `full_rejected`, `answer`, `dataset`) becomes
  render(question, template, prefix=initial_reason_steps); its `question` field wins over `prompt`
  when both are there. Its chosen/rejected are marked `no_eos`: they are partial answers.

Preference rows: `{prompt|question, chosen, rejected}` or Step-DPO rows. SFT rows: `{prompt, completion}`,
or records `{question, solution}` (e.g. from `mathpo.data.load("gsm8k", "train")`; completion = the
solution). Every row also gets `length` (prompt + longest completion, in tokens) so batches can be
grouped by length.
"""

from __future__ import annotations

from pathlib import Path

from .. import prompts
from ..data.files import read_file
from ..errors import UserError
from ..pairs.formats import step_prompt

STEP_FIELD = "initial_reason_steps"


def read_rows(data: str | list[dict], data_dir: str | None = None) -> list[dict]:
    """`data`: rows, a .jsonl/.json/.csv/.parquet file (raw rows), a dataset `preset[:split]`
    (`gsm8k:train`, records with question/solution) or `hub:owner/name[:config]` (split train)."""
    if isinstance(data, list):
        rows = data
    else:
        from .. import data as datasets_

        text = str(data)
        path = Path(text).expanduser()
        name, _, split = text.partition(":")
        if path.is_file():
            rows = read_file(path)  # raw rows: pair files keep their own field names
        elif text.startswith("hub:"):
            rows = datasets_.load(text, "train", folder=data_dir)
        elif name in datasets_.PRESETS:
            rows = datasets_.load(name, split or "train", folder=data_dir)
        else:
            raise UserError(f"--data {text}: no such file, nor a dataset preset[:split] "
                            f"({', '.join(datasets_.PRESETS)})")
    if not rows:
        raise UserError(f"--data {data if isinstance(data, str) else '(rows)'}: no rows")
    return rows


def _text(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{key}' must be a string (fields: {', '.join(row)})")
    return value


def preference_rows(rows: list[dict], tokenizer, template: str) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        where = f"pair row {i + 1}"
        chosen, rejected = _text(row, "chosen", where), _text(row, "rejected", where)
        if STEP_FIELD in row:
            question = row.get("question") if row.get("question") is not None else _text(row, "prompt", where)
            prompt = step_prompt(tokenizer, {"prompt": question, STEP_FIELD: row[STEP_FIELD]}, template)
        elif row.get("prompt") is not None:
            prompt = _text(row, "prompt", where)
        elif row.get("question") is not None:
            prompt = prompts.render(tokenizer, _text(row, "question", where), template)
            t = prompts.get(template)  # answers begin as the template's do (" He has ..." after "Answer:")
            chosen, rejected = t.as_answer(chosen), t.as_answer(rejected)
        else:
            raise UserError(f"{where}: needs 'prompt' or 'question' (fields: {', '.join(row)})")
        if chosen == rejected:
            raise UserError(f"{where}: chosen and rejected are identical")
        out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "no_eos": STEP_FIELD in row})
    return _with_lengths(out, tokenizer, ("chosen", "rejected"))


def sft_rows(rows: list[dict], tokenizer, template: str) -> list[dict]:
    out = []
    for i, row in enumerate(rows):
        where = f"sft row {i + 1}"
        if row.get("prompt") is not None and row.get("completion") is not None:
            prompt, completion = _text(row, "prompt", where), _text(row, "completion", where)
        elif row.get("question") is not None:
            key = "completion" if row.get("completion") is not None else "solution"
            if row.get(key) is None:
                raise UserError(f"{where}: a 'question' row needs 'solution' or 'completion' "
                                f"(fields: {', '.join(row)})")
            prompt = prompts.render(tokenizer, _text(row, "question", where), template)
            completion = prompts.get(template).as_answer(_text(row, key, where))
        else:
            raise UserError(f"{where}: needs prompt+completion or question+solution (fields: {', '.join(row)})")
        out.append({"prompt": prompt, "completion": completion})
    return _with_lengths(out, tokenizer, ("completion",))


def _with_lengths(rows: list[dict], tokenizer, parts: tuple[str, ...]) -> list[dict]:
    """Add `length` (tokens of prompt + longest part) for length-grouped batches."""
    count = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]  # noqa: E731
    n_prompt = count([r["prompt"] for r in rows])
    n_parts = [count([r[p] for r in rows]) for p in parts]
    for j, row in enumerate(rows):
        row["length"] = n_prompt[j] + max(n[j] for n in n_parts) + 1
    return rows
