"""Rows between stages: JSONL reading with precise errors, atomic whole-file writes, and
batch-by-batch appends that a killed process can never leave half-written.

Used by every subcommand (`mathpo sample`, `grade`, `pairs`, `train`, `eval`, `loop`).

Row conventions: every row has the question `id`; samples carry `sample`
(index within the question). Other fields are stage-specific and documented where written.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError


def iter_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> Iterator[dict]:
    """Yield the objects of a JSONL file; bad lines raise UserError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    required = tuple(required)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise UserError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
            yield row


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    return list(iter_jsonl(path, required))


def _dumps(row: Any) -> str:
    return json.dumps(row, ensure_ascii=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to a temp file beside `path`, fsync, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write all rows atomically: readers see the old file or the whole new one."""
    return atomic_write_text(path, "".join(_dumps(r) + "\n" for r in rows))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None


class JsonlAppender:
    """Append rows in batches; each batch is one write() of whole lines followed by fsync.

    On open, a torn last line (from a kill mid-write on a filesystem without atomic appends)
    is cut off, so the file always holds whole rows only. `rows()` returns what is already there,
    so a resumed job can skip the work it holds.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_torn_tail()

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with self.path.open("r+b") as f:
                f.truncate(keep)

    def rows(self) -> list[dict]:
        return read_jsonl(self.path) if self.path.exists() else []

    def append(self, rows: Iterable[dict]) -> None:
        text = "".join(_dumps(r) + "\n" for r in rows)
        if not text:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
