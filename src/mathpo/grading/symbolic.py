"""Math-Verify (sympy) checks in worker processes under a wall-clock limit that works from any thread.

Math-Verify's own timeouts use `signal.alarm`, which fails outside the main thread, and sympy can
hang or eat memory (exponent towers). So each check runs in a child process that the parent kills
when its deadline passes, and replaces; a killed check counts as "not equivalent" with timed_out set.
Children are plain `python -m mathpo.grading.worker` subprocesses (no multiprocessing, so no
`__main__` re-import and no fork of a threaded parent); each caps its own memory (grading.worker).

`symbolic_many(pairs, workers, timeout) -> [(equal, timed_out)]` is what grading.equivalence calls.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

DEFAULT_TIMEOUT = 3.0
MAX_SYMBOLIC = 500  # characters per side; longer answers are not handed to sympy
_CACHE_MAX = 100_000
_cache: dict[tuple[str, str], tuple[bool, bool]] = {}


def _env() -> dict:
    """The child must import this very mathpo (also when run from a source tree via sys.path)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class _Worker:
    """One `python -m mathpo.grading.worker` child speaking JSON lines over pipes."""

    def __init__(self, start_deadline: float):
        self.proc = subprocess.Popen([sys.executable, "-m", "mathpo.grading.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(), bufsize=0)
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.ready = False
        self.job: int | None = None
        self.deadline = start_deadline

    def send(self, pair: tuple[str, str]) -> None:
        self.proc.stdin.write((json.dumps(list(pair)) + "\n").encode())

    def read_lines(self) -> list[str] | None:
        """Complete lines now available; None when the child has gone (EOF)."""
        data = os.read(self.fd, 65536)
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(x) for x in lines if x.strip()]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class Pool:
    """N worker processes; `run(pairs, timeout)` answers every pair, killing any that overrun."""

    START_TIMEOUT = 60.0  # a fresh worker importing sympy on a busy machine

    def __init__(self, workers: int = 1):
        self.size = max(1, workers)
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()

    def _spawn(self) -> _Worker:
        return _Worker(time.monotonic() + self.START_TIMEOUT)

    def run(self, pairs: list[tuple[str, str]], timeout: float = DEFAULT_TIMEOUT) -> list[tuple[bool, bool]]:
        with self.lock:
            return self._run(pairs, timeout)

    def _run(self, pairs, timeout):
        out: list[tuple[bool, bool] | None] = [None] * len(pairs)
        todo = list(range(len(pairs)))[::-1]
        failed_starts = 0
        while len(self.workers) < min(self.size, max(1, len(pairs))):
            self.workers.append(self._spawn())
        while todo or any(w.job is not None for w in self.workers):
            for w in self.workers:
                if w.ready and w.job is None and todo:
                    w.job = todo.pop()
                    w.deadline = time.monotonic() + timeout
                    try:
                        w.send(pairs[w.job])
                    except OSError:  # died while idle: retry the job on a fresh worker
                        todo.append(w.job)
                        w.job, w.ready = None, False
                        w.deadline = 0.0
            busy = [w for w in self.workers if w.job is not None or not w.ready]
            if not busy:
                break
            wait_s = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            readable, _, _ = select.select([w.fd for w in busy], [], [], wait_s)
            for i, w in enumerate(list(self.workers)):
                if w.fd in readable:
                    lines = w.read_lines()
                    if lines is None:  # the child died (memory cap, crash): not shown equal
                        if w.job is not None:
                            out[w.job] = (False, False)
                        elif not w.ready:
                            failed_starts += 1
                            if failed_starts > 3:
                                raise RuntimeError("grading workers cannot start: python -m mathpo.grading.worker")
                        self._replace(i)
                        continue
                    for msg in lines:
                        if msg == "ready":
                            w.ready = True
                        elif w.job is not None:
                            out[w.job] = (bool(msg), False)
                            w.job = None
                elif time.monotonic() >= w.deadline and (w.job is not None or not w.ready):
                    if w.job is not None:
                        out[w.job] = (False, True)
                    self._replace(i)
        return [r if r is not None else (False, True) for r in out]

    def _replace(self, i: int) -> None:
        self.workers[i].kill()
        self.workers[i] = self._spawn()

    def close(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []


_pool: Pool | None = None
_pool_lock = threading.Lock()


def _shared_pool(workers: int) -> Pool:
    global _pool
    with _pool_lock:
        # grow, never shrink: eval grades with N workers, then maj@k asks for 1 (no restart for that)
        if _pool is None or _pool.size < workers or _pool_pid != os.getpid():
            if _pool is not None and _pool_pid == os.getpid():
                _pool.close()
            _set_pool(Pool(max(workers, _pool.size if _pool is not None and _pool_pid == os.getpid() else 1)))
        return _pool


_pool_pid = -1


def _set_pool(pool: Pool) -> None:
    global _pool, _pool_pid
    _pool, _pool_pid = pool, os.getpid()


def shutdown() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.close()
        _pool = None


atexit.register(shutdown)


def symbolic_many(pairs: list[tuple[str, str]], workers: int = 1,
                  timeout: float | None = None) -> list[tuple[bool, bool]]:
    """(equal, timed_out) for each (pred, gold) of normalized answers, cached across calls."""
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    keys = [(p, g) for p, g in pairs]
    todo = sorted({k for k in keys if k not in _cache and len(k[0]) <= MAX_SYMBOLIC and len(k[1]) <= MAX_SYMBOLIC})
    if todo:
        results = _shared_pool(workers).run(todo, timeout)
        if len(_cache) > _CACHE_MAX:
            _cache.clear()
        for k, r in zip(todo, results):
            _cache[k] = r
    return [_cache.get(k, (False, False)) for k in keys]
