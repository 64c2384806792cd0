"""Rows between stages: JSONL reading with precise errors, atomic whole-file writes, and
batch-by-batch appends that a killed process can never leave half-written.

Used by every subcommand (`mathpo sample`, `grade`, `pairs`, `train`, `eval`, `loop`).

A write the disk refuses (full disk, quota, read-only) leaves the previous file as it was and
raises UserError naming the file (one line, exit 2). Whole-file writes get the permissions a plain
open() would (the umask's; a file replaced keeps its own). `MATHPO_FAULT_KILL=SUFFIX[@N]` is the fault
test's hook (tests/test_faults.py): the N-th write (default 1st) to a path ending in SUFFIX writes
half its bytes and then SIGKILLs the process, as a power cut would.

Row conventions: every row has the question `id`; samples carry `sample`
(index within the question). Other fields are stage-specific and documented where written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
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
    with path.open("rb") as f:  # bytes, decoded per line: a bad byte is reported with its line
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x}); "
                                "save it as UTF-8") from None
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


def _read_umask() -> int:
    """The process umask: from /proc where Linux shows it, else by the set-and-restore dance
    (once, at import, before any thread of ours could create a file in between)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates 0600 and os.replace keeps it; atomic files get what a plain open() would give
_FILE_MODE = 0o666 & ~_read_umask()

_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)
_fault_counts: dict[str, int] = {}


def disk_error(path: Path, e: OSError) -> UserError:
    """The one line for a write the disk refused."""
    why = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
    return UserError(f"cannot write {path}: {why}; the previous file is unchanged (free space and re-run)")


def _write(f, path: Path, data: str) -> None:
    """f.write(data), flush, fsync; the fault hook (module docstring) cuts the write half-way and dies."""
    hook = os.environ.get("MATHPO_FAULT_KILL")
    if hook:
        suffix, _, nth = hook.partition("@")
        if path.as_posix().endswith(suffix):
            _fault_counts[suffix] = _fault_counts.get(suffix, 0) + 1
            if _fault_counts[suffix] == int(nth or 1):
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _mode(path: Path) -> int:
    """A replaced file keeps its permissions (as writing it in place would); a new one gets the umask's."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _FILE_MODE


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to a temp file beside `path`, fsync, then rename into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno in _DISK_ERRORS:
            raise disk_error(path, e) from None
        raise
    try:
        with contextlib.suppress(OSError):  # a filesystem without modes (some FUSE, CIFS) keeps its own
            os.fchmod(fd, _mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            _write(f, path, text)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _DISK_ERRORS:
            raise disk_error(path, e) from None
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
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{path}: not UTF-8 text (byte {data[e.start]:#04x} at line {line}); "
                        "save it as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None


class JsonlAppender:
    """Append rows in batches; a batch is whole or absent, never torn or partial.

    Each batch is one write() of whole lines, fsync, then its end is committed to a small
    sidecar (`.NAME.commit`: the file's size and inode). On open, whatever lies past the last
    committed end (a batch a kill cut mid-write, or wrote but did not commit) is cut off, so a
    resumed job redoes exactly the batches that were not finished: nothing lost, nothing
    doubled. Files without a valid sidecar (older runs; the file replaced since) get their
    torn last line cut instead. A batch the disk refuses is cut back off before UserError.
    `rows()` returns what is already there, so a resumed job can skip the work it holds.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.commit_path = self.path.with_name(f".{self.path.name}.commit")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_uncommitted()

    def _committed(self) -> int | None:
        """The committed size, when the sidecar belongs to this very file (same inode)."""
        try:
            size, inode = (int(x) for x in self.commit_path.read_text().split())
            return size if inode == self.path.stat().st_ino else None
        except (OSError, ValueError):
            return None

    def _truncate_uncommitted(self) -> None:
        if not self.path.exists():  # created empty and committed, so even a first batch cut short is cut off
            self.path.touch()
        size = self.path.stat().st_size
        keep = self._committed()
        if keep is None or keep > size:
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1 if data and not data.endswith(b"\n") else size
        if keep < size:
            with self.path.open("r+b") as f:
                f.truncate(keep)
        self._commit()

    def _commit(self) -> None:
        st = self.path.stat()
        atomic_write_text(self.commit_path, f"{st.st_size} {st.st_ino}\n")

    def rows(self) -> list[dict]:
        return read_jsonl(self.path) if self.path.exists() else []

    def append(self, rows: Iterable[dict]) -> None:
        text = "".join(_dumps(r) + "\n" for r in rows)
        if not text:
            return
        start = self.path.stat().st_size if self.path.exists() else 0
        try:
            with self.path.open("a", encoding="utf-8") as f:
                _write(f, self.path, text)
        except OSError as e:
            if e.errno not in _DISK_ERRORS:
                raise
            with self.path.open("r+b") as f:  # the part of the batch that got through
                f.truncate(start)
            raise disk_error(self.path, e) from None
        self._commit()
