"""`mathpo serve` under a soak, on loopback (127.0.0.1) only, with a tiny random model.

- The regression of issue 13: a flood of 40 requests, then a streaming client that hangs up after
  the first bytes, then one more request. The server runs with the garbage collector off, so a
  model or a place in line that is freed only when an abandoned stream object is collected stays
  held for good (before the fix the next request waited forever; once, with gc on, 120 s).
- A client that disconnects stops its generation within a few tokens (the request log's `steps`).
- The soak (slow, ~1 min, stops by itself well within 3 minutes): about 200 requests mixing plain,
  streaming, dropped-mid-stream, dropped-while-waiting and impatient clients, bursts over the queue
  limit, and bad bodies. Every request is answered, told busy (429) or, for a bad body, refused
  (400/404/413), within a stated bound; nothing fails; the server's RSS stays flat.

Figures for the README (`## Reliability`):
    python -m pytest -q -s tests/test_serve_soak.py -k soak     # prints one JSON line: soak ...
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from test_serve import save_untied_tiny_model

QUEUE = 3  # waiting requests per model the soak server accepts
MAX_TOKENS = 32  # per plain / streaming request
LONG = 2000  # max_tokens of the clients that hang up: far longer than they stay (fits the tiny model's 2048)
SERVER_CAP = LONG  # the server's --max-new-tokens
BACKOFF = 0.25  # seconds a soak client waits after "busy" (the server's Retry-After is 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body, timeout: float = 60) -> tuple[int, dict | str]:
    """(status, JSON body or SSE text); `body` bytes are sent as they are."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if "json" in r.headers.get("content-type", "") else text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def start_server(model_dirs: list[Path], workdir: Path, *args: str, preamble: str = ""):
    """`mathpo serve` on a free loopback port in a subprocess (after `preamble`, Python run first);
    returns (process, base url) once /v1/models answers."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MATHPO_DATA": str(workdir / "no-data")}
    code = f"{preamble}\nimport sys\nfrom mathpo.cli import main\nsys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "serve", "--model", str(model_dirs[0]), "--port", str(port), *args]
    if len(model_dirs) > 1:
        cmd += ["--compare", str(model_dirs[1])]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mathpo serve exited {proc.returncode}:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(base + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"mathpo serve did not come up in 90 s:\n{proc.stdout.read()}")
        time.sleep(0.3)


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mib(pid: int) -> float | None:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def hang_up(base: str, body: dict, events: int = 2, hold: float = 0.0, timeout: float = 60):
    """Stream `body`, read `events` SSE events (0: only the status line, which comes before the
    request's turn) and `hold` seconds more, then drop the connection.
    Returns (status or None, SSE events received)."""
    port = int(base.rsplit(":", 1)[1])
    data = json.dumps({**body, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(data) + data)
        got, until = b"", None
        while not got.startswith(b"HTTP/1.1 429"):
            if events == 0 and b"\r\n" in got:  # the status line only (sent before the model runs)
                break
            if events and until is None and got.count(b"data: ") >= events:
                until = time.time() + hold
            if until is not None and time.time() >= until:
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None
    return status, got.count(b"data: ")


def sse_text(body: str) -> tuple[str, str | None]:
    """(content, last finish_reason) of an SSE body that must end with [DONE]."""
    events = [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]
    assert events and events[-1] == "[DONE]", body[-200:]
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks), chunks
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    return text, finish


def log_rows(log_dir: Path) -> list[dict]:
    path = log_dir / "requests.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    return save_untied_tiny_model(tmp_path_factory.mktemp("soak-model"), tokenizer)


def ask(i: int, max_tokens: int = MAX_TOKENS, **extra) -> dict:
    return {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "max_tokens": max_tokens,
            "temperature": 0, **extra}


# ---- issue 13's sequence, with the garbage collector off ----------------------------------------------

def test_flood_then_hang_up_then_next_request_is_served(model_dir, tmp_path):
    log_dir = tmp_path / "log"
    proc, base = start_server([model_dir], tmp_path, "--max-new-tokens", str(SERVER_CAP), "--queue", "8",
                              "--log-dir", str(log_dir), preamble="import gc; gc.disable()")
    url = base + "/v1/chat/completions"
    try:
        results = [None] * 40
        barrier = threading.Barrier(40)

        def flood(i):
            barrier.wait()
            results[i] = post(url, ask(i, stream=i % 2 == 1), timeout=120)[0]

        threads = [threading.Thread(target=flood, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        assert set(results) <= {200, 429} and results.count(200) >= 9, results
        # A streaming client that hangs up after the first bytes of a long answer.
        assert hang_up(base, ask(99, max_tokens=LONG))[0] == 200
        t0 = time.time()
        try:
            status, body = post(url, ask(100, max_tokens=4), timeout=30)
        except OSError as e:  # what issue 13 saw (for 120 s); before the fix, with gc off, forever
            pytest.fail(f"the next request was not answered in 30 s: {e}")
        waited = time.time() - t0
        assert status == 200 and body["choices"][0]["finish_reason"] == "length"
        # Served promptly: the dropped generation gave the model back (4 tokens take ~0.1 s here).
        assert waited < 10, f"the next request waited {waited:.1f} s"
        gone = wait_for(lambda: [r for r in log_rows(log_dir) if r.get("client") == "gone"], 30)
        # The dropped generation stopped early: a few tokens past the point where the client left,
        # not the LONG it asked for.
        assert len(gone) == 1 and gone[0]["steps"] < 100, gone
        figures = {"flood_answered": results.count(200), "flood_busy": results.count(429),
                   "next_request_s": round(waited, 2), "dropped_steps": gone[0]["steps"], "asked": LONG}
        print("\nflood-then-hang-up " + json.dumps(figures))
    finally:
        stop_server(proc)


def test_a_dropped_client_stops_its_generation_and_frees_the_model(model_dir, tmp_path):
    """Streaming and non-streaming clients that leave: running, or still waiting in line."""
    log_dir = tmp_path / "log"
    proc, base = start_server([model_dir], tmp_path, "--max-new-tokens", str(SERVER_CAP), "--queue", "4",
                              "--log-dir", str(log_dir))
    url = base + "/v1/chat/completions"
    try:
        post(url, ask(0, max_tokens=2))  # warm
        t0 = time.time()
        status, _ = post(url, ask(1, max_tokens=64))
        per_token = (time.time() - t0) / 64
        # A long streaming generation, read for 2 s and dropped; meanwhile one client waits in line and
        # drops before its turn, and an impatient non-streaming one gives up after 0.5 s in line.
        runner_result = []
        runner = threading.Thread(target=lambda: runner_result.append(
            hang_up(base, ask(2, max_tokens=LONG), events=2, hold=2.0)))
        runner.start()
        time.sleep(0.5)
        assert hang_up(base, ask(3, max_tokens=LONG), events=0)[0] == 200
        with pytest.raises(OSError):  # urllib's timeout
            post(url, ask(4, max_tokens=LONG), timeout=0.5)
        runner.join(30)
        t0 = time.time()
        status, body = post(url, ask(5, max_tokens=8), timeout=60)
        waited = time.time() - t0
        assert status == 200 and body["usage"]["completion_tokens"] == 8
        gone = wait_for(lambda: (rows := [r for r in log_rows(log_dir) if r.get("client") == "gone"])
                        and len(rows) == 3 and rows, 30)
        steps = sorted(r["steps"] for r in gone)
        (status, events), = runner_result
        # Served at once: any of the three running on would take LONG tokens (~LONG * per_token s).
        assert status == 200 and waited < 5 + 50 * per_token, (waited, per_token, steps)
        # The two that waited never ran; the runner stopped a few tokens after the last one it sent
        # (events - 1: the first event is the role); it ran for 2 s, far from LONG tokens.
        assert steps[:2] == [0, 0] and steps[2] >= events - 1 and steps[2] - (events - 1) < 50, (steps, events)
        figures = {"next_request_s": round(waited, 2), "steps": steps, "tokens_sent": events - 1}
        print("\ndropped " + json.dumps(figures))
    finally:
        stop_server(proc)


# ---- the soak -----------------------------------------------------------------------------------------

BAD_BODIES = [
    (b"{nope", 400), (b"", 400), (b"[" * 50_000, 400), (b"\xff\xfe{}", 400),
    (json.dumps({"messages": "hi"}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}).encode(), 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e999}', 400),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', 400),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 1.5}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stop": 7}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "model": ["a"]}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stream_options": "yes"}).encode(), 400),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}).encode(), 404),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 20_000}]}).encode(), 400),  # over the chars
    (json.dumps({"messages": [{"role": "user", "content": "x" * 2_000_000}]}).encode(), 413),  # over the bytes
]


@pytest.mark.slow
def test_soak(model_dir, tmp_path):
    started = time.time()
    log_dir = tmp_path / "log"
    proc, base = start_server([model_dir], tmp_path, "--max-new-tokens", str(SERVER_CAP), "--queue", str(QUEUE),
                              "--max-prompt-chars", "16000", "--log-dir", str(log_dir))
    url = base + "/v1/chat/completions"
    rng = random.Random(13)
    outcomes: list[tuple[str, str, float]] = []  # (kind, outcome, seconds)
    lock = threading.Lock()

    def record(kind: str, outcome: str, seconds: float):
        with lock:
            outcomes.append((kind, outcome, seconds))

    def one(kind: str, i: int):
        t0 = time.time()
        try:
            if kind in ("plain", "stream"):
                status, body = post(url, ask(i, stream=kind == "stream"), timeout=bound)
                if status == 200:
                    text, finish = (sse_text(body) if kind == "stream" else
                                    (body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"]))
                    ok = finish in ("stop", "length") and (finish == "stop" or text.strip())
                    outcome = "answered" if ok else f"failed: bad answer {text!r} {finish}"
                elif status == 429:
                    outcome = "busy" if body["error"]["code"] == "server_busy" else f"failed: {body}"
                else:
                    outcome = f"failed: {status} {body}"
            elif kind == "bad":
                raw, want = BAD_BODIES[i % len(BAD_BODIES)]
                status, body = post(url, raw, timeout=bound)
                outcome = "refused" if status == want and body["error"]["message"] else f"failed: {status} {body}"
            elif kind in ("drop", "drop-waiting"):
                status, _ = hang_up(base, ask(i, max_tokens=LONG), events=2 if kind == "drop" else 0, timeout=bound)
                outcome = "busy" if status == 429 else "gone" if status == 200 else f"failed: {status}"
            else:  # impatient: a non-streaming client that gives up after 0.2 s
                try:
                    status, _ = post(url, ask(i, max_tokens=LONG), timeout=0.2)
                    outcome = "busy" if status == 429 else f"failed: {status}"
                except OSError:
                    outcome = "gone"
        except Exception as e:  # a dropped or timed-out connection is a lost request
            outcome = f"failed: {type(e).__name__}: {e}"
        record(kind, outcome, time.time() - t0)
        return outcome

    try:
        # Warm-up, the memory baseline, and the time of one request alone.
        rss = {"boot": rss_mib(proc.pid)}
        alone = []
        for i in range(5):
            t0 = time.time()
            assert post(url, ask(i))[0] == 200
            alone.append(time.time() - t0)
        one_request = statistics.median(alone)
        # Admitted requests wait for at most QUEUE others, each MAX_TOKENS long (dropped ones stop
        # within a few tokens): (QUEUE + 1) requests' time, x4 for a loaded machine, + 5 s.
        bound = 4 * (QUEUE + 1) * one_request + 5
        # Every kind once more before the memory baseline (first-time allocations: the 2 MB body, ...).
        for i, kind in enumerate(["stream", "drop", "drop-waiting", "impatient"] + ["bad"] * len(BAD_BODIES)):
            one(kind, i)
        rss["start"] = rss_mib(proc.pid)

        # Mixed traffic in a seeded order from 1 + QUEUE clients: as many as fit (busy is rare here).
        kinds = (["plain"] * 45 + ["stream"] * 35 + ["drop"] * 15 + ["drop-waiting"] * 5 + ["impatient"] * 5
                 + ["bad"] * len(BAD_BODIES))
        rng.shuffle(kinds)
        work = list(enumerate(kinds))
        work_lock = threading.Lock()

        def client():
            # A client told "busy" backs off before its next request, as the server's Retry-After
            # asks (a quarter of its 1 s here): without it a client that meets a line still held
            # by a hung-up request spins through the work list in 20 ms answers, and how many get
            # answered becomes a race with the disconnect poll (22 to 91 of 207 seen).
            while True:
                with work_lock:
                    if not work:
                        return
                    i, kind = work.pop()
                if one(kind, i) == "busy":
                    time.sleep(BACKOFF)

        clients = [threading.Thread(target=client) for _ in range(1 + QUEUE)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(150)
        rss["mixed"] = rss_mib(proc.pid)

        # Bursts over the queue limit: 15 at once, 1 + QUEUE fit.
        for burst in range(4):
            barrier = threading.Barrier(15)

            def at_once(i, barrier=barrier, burst=burst):
                barrier.wait()
                one("stream" if i % 2 else "plain", 1000 + 15 * burst + i)

            threads = [threading.Thread(target=at_once, args=(i,)) for i in range(15)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(150)
        # The line has room again: one more is served within the bound.
        one("plain", 2000)
        rss["end"] = rss_mib(proc.pid)

        counts = {k: sum(o == k for _, o, _ in outcomes) for k in ("answered", "busy", "refused", "gone")}
        failed = [(k, o) for k, o, _ in outcomes if o not in counts]
        waits = [s for k, o, s in outcomes if o in ("answered", "busy", "refused")]
        busy_waits = [s for _, o, s in outcomes if o == "busy"]
        n_gone = sum(o == "gone" for _, o, _ in outcomes)
        gone = wait_for(lambda: (rows := [r for r in log_rows(log_dir) if r.get("client") == "gone"])
                        and len(rows) >= n_gone and rows, 15) or []
        summary = {"requests": len(outcomes) + len(alone), **counts, "failed": len(failed),
                   "longest_wait_s": round(max(waits), 2), "longest_busy_answer_s": round(max(busy_waits), 2),
                   "bound_s": round(bound, 1), "one_request_alone_s": round(one_request, 3),
                   "dropped_steps_max": max((r["steps"] for r in gone), default=None),
                   "rss_mib": {k: round(v, 1) if v else None for k, v in rss.items()},
                   "seconds": round(time.time() - started, 1)}
        print("\nsoak " + json.dumps(summary))
        assert not failed, failed[:10]
        # how many get answered rather than busy depends on how fast the model runs next to other work
        # (with the back-off 92 of 207 on a quiet machine; the bursts alone give 44 busy): the test
        # asks that both kinds happen, and none fail
        assert summary["requests"] >= 200 and counts["answered"] >= 30 and counts["busy"] >= 20
        assert counts["refused"] == 2 * len(BAD_BODIES)
        assert max(waits) <= bound, summary
        assert max(busy_waits) <= 2, summary  # "busy" is said at once, not after waiting
        # Every dropped generation stopped soon after its client left (hung-up streams within a few
        # tokens, as tested above; impatient ones within one disconnect poll), none ran to LONG.
        assert len(gone) == counts["gone"] and max(r["steps"] for r in gone) < LONG / 10, gone
        if rss["start"] is not None:
            # Flat: at most 10% (and 40 MiB) above the warmed-up start, and no growth in the second half.
            assert rss["end"] - rss["start"] <= min(40, 0.1 * rss["start"]), rss
            assert rss["end"] - rss["mixed"] <= 20, rss
        assert time.time() - started < 180
    finally:
        stop_server(proc)
