"""Sampling on a Ray cluster: `mathpo sample --ray ADDRESS` and a loop config's `ray: {address: auto}`
(its sampling, rollout and eval stages).

`start(...)` connects to the cluster (`ray.init(address)`) and starts `workers` Ray actors; each
builds one ordinary backend (hf or vllm) with the builder the caller passes -- the same function a
single process uses -- so a worker samples exactly as `mathpo sample` does alone. The returned
`RayBackend` is a `Backend` like any other: `generate_stream` hands the prompts out in chunks of
consecutive prompts, at most two chunks queued per worker so none waits between chunks, and yields
each prompt's completions as its chunk comes back. `sample_records` appends those rows by whole
questions and rewrites the finished file in question order, as it does for the hf backend, so
resuming works unchanged. Rows equal a single process's because each row's random stream is keyed by
(seed, prompt, sample), not by the worker or batch it ran in (hf backend; vLLM seeds per request).

A worker that dies (its process killed, its node lost), or a replacement whose backend fails to
build, is replaced by a new actor, up to `restarts` times per backend, and its unfinished chunks go
back to the queue for whichever worker is free; a chunk's results are taken once, from the attempt
that finished, so no row is lost or doubled. A chunk that fails `attempts` times stops the run (the
rows written so far stay; a re-run resumes).

Why actors and a small queue over `ray.wait` rather than Ray Data's `map_batches`: the driver must
stay the only writer of one resumable JSONL file with whole questions per append, and Step-DPO's
rollout rounds are many short `generate` calls that need their results back in order; this needs
Ray core alone (no pyarrow / pandas). Rather than `ray.util.ActorPool`: the pool gives one task per
actor at a time (a gap between chunks) and leaves a failed item and a dead actor's replacement to
the caller, which is most of what this module does. The actors are released when the backend is
garbage-collected (Ray ends an actor once no handle refers to it) or by `close()`.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

from ..errors import UserError
from . import Completion, SamplingParams, Streaming

EXTRA = "pip install 'mathpo[ray]'"
IN_FLIGHT = 2  # chunks queued per worker: one running, one ready to start


@dataclass(frozen=True)
class RaySettings:
    address: str = "auto"  # `auto` (a cluster started on this node), HOST:PORT, ray://HOST:10001, or local
    workers: int | None = None  # default: the cluster's GPUs / num_gpus, or its CPUs / num_cpus
    num_gpus: float | None = None  # per worker; default 1 on a cluster with GPUs, else 0
    num_cpus: float = 1  # per worker
    chunk: int | None = None  # prompts per task; default len(prompts) / (4 * workers), 1..256
    restarts: int = 4  # dead workers replaced at most this many times per backend
    attempts: int = 3  # tries per chunk before the run stops


def settings(value) -> RaySettings | None:
    """`--ray ADDRESS` / `ray: ADDRESS` / `ray: {address: ..., workers: ...}` -> RaySettings (None: off).
    Checks the keys and that Ray is installed, before anything runs."""
    if value is None or value is False:
        return None
    if isinstance(value, RaySettings):
        return value
    if isinstance(value, str):
        value = {"address": value}
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise UserError(f"ray: expected an address or a section, got {value!r}")
    known = {f.name for f in fields(RaySettings)}
    bad = sorted(set(value) - known)
    if bad:
        raise UserError(f"unknown ray option '{bad[0]}' ({', '.join(sorted(known))})")
    s = RaySettings(**value)
    for name in ("workers", "chunk", "attempts"):
        v = getattr(s, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise UserError(f"ray.{name} must be a positive integer, got {v!r}")
    if not isinstance(s.restarts, int) or isinstance(s.restarts, bool) or s.restarts < 0:
        raise UserError(f"ray.restarts must be an integer >= 0, got {s.restarts!r}")
    for name in ("num_cpus", "num_gpus"):
        v = getattr(s, name)
        if v is not None and (not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v < math.inf):
            raise UserError(f"ray.{name} must be a number >= 0, got {v!r}")
    if s.num_cpus == 0 and s.num_gpus == 0:  # a worker that asks for nothing: the cluster fits any number
        raise UserError("ray.num_cpus and ray.num_gpus are both 0: give a worker some CPU or GPU")
    if importlib.util.find_spec("ray") is None:
        raise UserError(f"sampling on Ray needs Ray installed: {EXTRA}")
    return s


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"sampling on Ray needs Ray installed: {EXTRA}") from None
    return ray


def connect(address: str):
    """Join the cluster once per process (a driver already connected keeps its connection)."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address)
        except ConnectionError as e:
            raise UserError(f"no Ray cluster at '{address}' ({e}); start one with `ray start --head`") from None
    return ray


class _Worker:
    """One Ray actor: builds its backend with the caller's builder and samples chunks with it."""

    def __init__(self, build: Callable, args: tuple):
        self.error = None
        try:
            self.backend = build(*args)[1]  # builders return (loaded, backend), as a single process uses
        except Exception as e:  # reported by ready(), so the driver fails with the real message
            self.error = e

    def ready(self) -> int:
        if self.error is not None:
            raise self.error
        return os.getpid()

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.ready()
        return self.backend.generate(prompts, params)


@dataclass
class _Chunk:
    start: int
    stop: int
    tries: int = 0


class RayBackend(Streaming):
    """A `Backend` whose prompts are sampled by Ray actors (see the module docstring)."""

    def __init__(self, s: RaySettings, build: Callable, args: tuple, name: str):
        self.ray = connect(s.address)
        self.settings, self.name = s, name
        total = self.ray.cluster_resources()
        gpus = s.num_gpus if s.num_gpus is not None else (1 if total.get("GPU", 0) >= 1 else 0)
        if not gpus and not s.num_cpus:  # num_gpus left to default to 0 on a cluster without GPUs
            raise UserError(f"ray.num_cpus is 0 and the Ray cluster at '{s.address}' has no GPU: "
                            "give a worker some CPU (ray.num_cpus)")
        fit = int(total.get("GPU", 0) // gpus) if gpus else int(total.get("CPU", 0) // s.num_cpus)
        n = s.workers or fit
        if n < 1 or n > fit:
            raise UserError(f"the Ray cluster at '{s.address}' fits {fit} workers of {s.num_cpus} CPU, "
                            f"{gpus} GPU each (asked for {n}); set ray.workers / ray.num_gpus / ray.num_cpus")
        self._actor = self.ray.remote(num_cpus=s.num_cpus, num_gpus=gpus, max_restarts=0)(_Worker)
        self._build, self._size = (build, args), (n, gpus)
        self.restarts_left = s.restarts
        self.replaced = 0  # workers that died (or failed to load) and were replaced
        self.retried = 0  # chunk attempts that failed and were queued again
        self.workers: list = []  # started at the first prompts: a resumed run with nothing left starts none
        self.loading: dict = {}  # ready() ref -> a replacement worker still building its backend
        self.pids: list[int] = []

    def _start(self) -> None:
        (n, gpus), s = self._size, self.settings
        workers = [self._actor.remote(*self._build) for _ in range(n)]
        self.pids = self._get([w.ready.remote() for w in workers])
        self.workers = workers
        print(f"ray: {n} {self.name} workers ({s.num_cpus} CPU, {gpus} GPU each) on {s.address}")

    def _get(self, refs):
        """ray.get, with a UserError raised in a worker (say, a missing backend) kept one line."""
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, UserError):
                raise UserError(str(e.cause)) from None
            raise

    def close(self) -> None:
        for w in self.workers + list(self.loading.values()):
            self.ray.kill(w)
        self.workers, self.loading = [], {}

    def generate_stream(self, prompts: list[str], params: SamplingParams) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (prompt index, its n completions) as chunks finish, in no fixed order."""
        if not prompts:
            return
        if not self.workers and not self.loading and not self.pids:
            self._start()
        size = self.settings.chunk or min(256, max(1, math.ceil(len(prompts) / (4 * max(1, len(self.workers))))))
        queue = deque(_Chunk(i, min(i + size, len(prompts))) for i in range(0, len(prompts), size))
        running: dict = {}  # object ref -> (worker, chunk)
        ray = self.ray
        while queue or running:
            for w in self.workers:  # keep every ready worker's queue full
                while queue and sum(1 for x, _ in running.values() if x is w) < IN_FLIGHT:
                    c = queue.popleft()
                    running[w.generate.remote(prompts[c.start:c.stop], params)] = (w, c)
            if not running and not self.loading:
                raise RuntimeError("no Ray worker left to sample with (all died; a re-run resumes)")
            [ref], _ = ray.wait(list(running) + list(self.loading), num_returns=1)
            if ref in self.loading:  # a replacement worker has built its backend (or died or failed doing so)
                w = self.loading.pop(ref)
                try:
                    ray.get(ref)
                    self.workers.append(w)
                except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                    # a load that raised (out of memory, a missing file on that node) counts as a death:
                    # against `restarts`, so a model that cannot load anywhere stops after that many
                    ray.kill(w)
                    self._respawn(e)
                continue
            w, c = running.pop(ref)
            try:
                results = self._get(ref)
            except ray.exceptions.RayActorError as e:  # the worker died: replace it, re-queue its chunk
                self._replace(w, e)
                self._retry(c, queue, e)
                continue
            except ray.exceptions.RayTaskError as e:  # the backend raised: try the chunk again
                self._retry(c, queue, e)
                continue
            yield from zip(range(c.start, c.stop), results, strict=True)

    def _retry(self, c: _Chunk, queue: deque, error: Exception) -> None:
        c.tries += 1
        if c.tries >= self.settings.attempts:
            raise RuntimeError(f"prompts {c.start}..{c.stop - 1} failed {c.tries} times on Ray workers: "
                               f"{type(error).__name__}") from error
        self.retried += 1
        queue.appendleft(c)

    def _replace(self, dead, error: Exception) -> None:
        if dead not in self.workers:
            return  # one of its other chunks already reported the death
        self.workers.remove(dead)
        self.ray.kill(dead)
        self._respawn(error)

    def _respawn(self, error: Exception) -> None:
        what = "failed to load" if isinstance(error, self.ray.exceptions.RayTaskError) else "died"
        if self.restarts_left <= 0:
            print(f"ray: a worker {what} ({type(error).__name__}); {len(self.workers)} left, no restarts left")
            return
        self.restarts_left -= 1
        self.replaced += 1
        print(f"ray: a worker {what} ({type(error).__name__}); starting a new one")
        new = self._actor.remote(*self._build)
        self.loading[new.ready.remote()] = new  # takes chunks once its model is loaded


def start(value, build: Callable, args: tuple, model: str, backend: str, cache_dir: str | None = None):
    """What `build(*args)` returns -- (loaded, backend) -- but with the backend spread over a Ray
    cluster: `build(*args)` runs in each worker; here only the tokenizer loads (for the prompts)."""
    from .. import models

    ray_backend = RayBackend(settings(value), build, args, name=backend)
    path = models.resolve(model, cache_dir)
    return models.Loaded(None, models.load_tokenizer(path), path, "ray"), ray_backend
