"""One writer per run folder: `hold(folder, command)` takes an exclusive lock on FOLDER/.mathpo.lock
(flock) and writes the holder's pid and command into it. Used by `mathpo loop`, `sample` and `train`.

A second process asking for the same folder gets UserError naming the holder's pid (one line, exit
2). The kernel drops a flock when its holder dies, however it dies (SIGKILL included), so a lock
file left by a dead process never blocks: the next holder just takes it. The lock is held until
the process exits (or `release`); asking again from the same process is a no-op. The lock's file
descriptor is not inherited by child processes (Python opens files close-on-exec). `release` of a
folder that `hold` created and that holds nothing else removes it again, so a command that fails on
bad input leaves no empty run folder behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".mathpo.lock"
_held: dict[Path, tuple[int, bool]] = {}  # lock file -> (descriptor holding the flock, folder created by hold)


def hold(folder: str | os.PathLike, command: str) -> Path:
    """Lock `folder` for this process (created if missing); UserError when a live process holds it."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / LOCK_NAME).resolve()
    if path in _held:
        return path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").split()
        os.close(fd)
        pid = holder[0] if holder else "unknown"
        what = f" (mathpo {' '.join(holder[1:])})" if len(holder) > 1 else ""
        raise UserError(f"{folder} is in use by pid {pid}{what}; wait for it to finish or stop it "
                        "(one writer per run folder)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    _held[path] = (fd, created)
    return path


def release(folder: str | os.PathLike) -> None:
    """Drop this process's lock on `folder` (if it holds one); tidy a folder `hold` made for nothing."""
    path = (Path(folder) / LOCK_NAME).resolve()
    fd, created = _held.pop(path, (None, False))
    if fd is None:
        return
    if created and [p.name for p in path.parent.iterdir()] == [LOCK_NAME]:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
    os.close(fd)
