"""Datasets: presets (gsm8k, math, math500, multiarith) and any JSONL/JSON/CSV/parquet file or hub
dataset through a field mapping. Every row becomes a record
`{id, question, gold, solution, **other source fields}`.

Used by `mathpo eval`, `mathpo sample --dataset`, `mathpo train` (labelled data) and `mathpo loop`.
Preset files live in the data dir: `--data-dir`, else $MATHPO_DATA, else `../shared/data` beside
the checkout (or the current folder) when that exists. Formats: ../shared/data/README.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..grading.extract import after_hashes, last_boxed
from .files import read_file

QUESTION_FIELDS = ("question", "problem", "input", "query", "instruction", "prompt")
ANSWER_FIELDS = ("gold", "final_answer", "answer", "target", "label")
SOLUTION_FIELDS = ("solution", "rationale", "response")


@dataclass(frozen=True)
class Mapping:
    question: str | None = None
    answer: str | None = None
    solution: str | None = None
    answer_from: str = "auto"  # auto | field | hashes | boxed


@dataclass(frozen=True)
class Preset:
    files: dict  # split -> relative path (or (path, slice))
    mapping: Mapping
    id_field: str | None = None


# DPO-ST holds out 768 of GSM8K's 7,473 training questions as dev; we take the last 768.
GSM8K_DEV = 768
PRESETS = {
    "gsm8k": Preset(
        {"train": "gsm8k/train.jsonl", "test": "gsm8k/test.jsonl",
         "train-6705": ("gsm8k/train.jsonl", slice(0, -GSM8K_DEV)),
         "dev": ("gsm8k/train.jsonl", slice(-GSM8K_DEV, None))},
        Mapping(question="question", solution="answer", answer_from="hashes"),
    ),
    "math": Preset({"test": "math/test.jsonl"},
                   Mapping(question="problem", solution="solution", answer_from="boxed"), "idx"),
    "math500": Preset({"test": "math500/test.jsonl"},
                      Mapping(question="problem", answer="answer", solution="solution",
                              answer_from="field"), "unique_id"),
    "multiarith": Preset({"test": "multiarith/test.jsonl"},
                         Mapping(question="input", answer="target", answer_from="field")),
}


def data_dir(override: str | os.PathLike | None = None) -> Path | None:
    if override:
        return Path(override)
    if os.environ.get("MATHPO_DATA"):
        return Path(os.environ["MATHPO_DATA"])
    repo = Path(__file__).resolve().parents[3]  # src/mathpo/data/__init__.py -> checkout root
    for base in (repo.parent, Path.cwd().parent, Path.cwd()):
        cand = base / "shared" / "data"
        if cand.is_dir():
            return cand
    return None


def _read_hub(name: str, split: str) -> list[dict]:
    import datasets

    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(repo, config or None, split=split)
    except Exception as e:  # no hub here, unknown name, unknown split...
        raise UserError(f"cannot load hub dataset '{name}' split '{split}': {str(e).splitlines()[0]}") from None
    return ds.to_list()


def _pick(row: dict, given: str | None, guesses: tuple, what: str, where: str) -> str | None:
    if given:
        if given not in row:
            raise UserError(f"{where}: no field '{given}' for the {what} (fields: {', '.join(row)})")
        return given
    return next((f for f in guesses if f in row), None)


def _to_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def to_records(rows: list[dict], mapping: Mapping, source: str, id_field: str | None = None) -> list[dict]:
    """Map source rows to records; field names are resolved on the first row."""
    if not rows:
        raise UserError(f"{source}: no rows")
    first = rows[0]
    q = _pick(first, mapping.question, QUESTION_FIELDS, "question", source)
    if q is None:
        raise UserError(f"{source}: no question field found; set --question-field (fields: {', '.join(first)})")
    a = _pick(first, mapping.answer, ANSWER_FIELDS, "answer", source)
    s = _pick(first, mapping.solution, SOLUTION_FIELDS, "solution", source)
    how = mapping.answer_from
    if how == "auto":
        if a and "####" in str(first[a]):  # GSM8K-style: the 'answer' is a worked solution
            s, a, how = a, None, "hashes"
        elif a:
            how = "field"
        elif s and last_boxed(str(first[s])) is not None:
            how = "boxed"
        elif s and after_hashes(str(first[s])) is not None:
            how = "hashes"
        else:
            raise UserError(f"{source}: cannot find the answer; set --answer-field or --solution-field "
                            f"with --answer-from (fields: {', '.join(first)})")
    if how == "field" and a is None:
        raise UserError(f"{source}: --answer-from field needs an answer field")
    if how in ("hashes", "boxed") and s is None:
        raise UserError(f"{source}: --answer-from {how} needs a solution field")
    id_field = id_field or ("id" if "id" in first else None)
    stem = Path(source).stem if "/" in source or "." in source else source
    out = []
    for i, row in enumerate(rows):
        where = f"{source}: row {i + 1}"
        if q not in row or row[q] is None:
            raise UserError(f"{where}: missing field '{q}'")
        solution = str(row[s]) if s and row.get(s) is not None else None
        if how == "field":
            if row.get(a) is None:
                raise UserError(f"{where}: missing field '{a}'")
            gold = _to_text(row[a])
        else:
            if solution is None:
                raise UserError(f"{where}: missing field '{s}'")
            gold = after_hashes(solution) if how == "hashes" else last_boxed(solution)
            if gold is None:
                marker = "#### N" if how == "hashes" else "\\boxed{}"
                raise UserError(f"{where}: no final answer ({marker}) in field '{s}'")
        rec = {k: v for k, v in row.items() if k not in (q, a, s)}
        rid = row.get(id_field) if id_field else None
        rec.update(id=str(rid) if rid is not None else f"{stem}-{i}", question=str(row[q]).strip(),
                   gold=gold, solution=solution)
        out.append(rec)
    return out


def load(name: str, split: str = "test", limit: int | None = None, folder: str | None = None,
         mapping: Mapping = Mapping()) -> list[dict]:
    """Load a preset, a file, or `hub:owner/name[:config]` as records; `limit` keeps the first N."""
    if limit is not None and limit <= 0:
        raise UserError(f"--limit must be positive, got {limit}")
    if name in PRESETS:
        preset = PRESETS[name]
        if split not in preset.files:
            raise UserError(f"dataset {name} has no split '{split}' (splits: {', '.join(preset.files)})")
        base = data_dir(folder)
        if base is None:
            raise UserError(f"dataset {name}: no data dir; pass --data-dir or set MATHPO_DATA")
        spec = preset.files[split]
        rel, part = spec if isinstance(spec, tuple) else (spec, slice(None))
        path = base / rel
        if not path.is_file():
            raise UserError(f"dataset {name}: {path} not found (set --data-dir)")
        rows = read_file(path)
        prefix = f"{name}-{split}"
        ids = list(range(len(rows)))[part]
        rows = rows[part]
        mapping = mapping if mapping != Mapping() else preset.mapping
        records = to_records(rows, mapping, str(path), preset.id_field)
        if preset.id_field is None:
            for rec, i in zip(records, ids):
                rec["id"] = f"{prefix}-{i}"
    elif name.startswith("hub:"):
        records = to_records(_read_hub(name[4:], split), mapping, name)
    elif Path(name).suffix:
        path = Path(name).expanduser()
        if not path.is_file():
            raise UserError(f"no such file: {path}")
        records = to_records(read_file(path), mapping, str(path))
    else:
        raise UserError(f"unknown dataset '{name}': a preset ({', '.join(PRESETS)}), a file, or hub:owner/name")
    if not records:
        raise UserError(f"dataset {name}: empty")
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise UserError(f"dataset {name}: duplicate ids")
    return records[:limit] if limit else records
