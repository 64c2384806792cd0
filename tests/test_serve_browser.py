"""`mathpo serve` for real: the command on a free loopback port with two tiny models, the page
driven in headless Chromium (Debian's package, through Playwright's executable_path; never a
browser download), and 20 concurrent API requests against the running server.

`make test` installs Chromium; set MATHPO_SCREENSHOT_DIR to keep the page screenshots. Without
Playwright (the `test` extra) or Chromium the page test is skipped, saying which one to install.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest

from mathpo import prompts
from mathpo.errors import UserError, require
from mathpo.serve.render import extract_answer
from test_serve import save_untied_tiny_model
from test_serve_soak import post, start_server, stop_server

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUEUE = 2  # waiting requests per model the server accepts
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def server(tmp_path_factory, tokenizer):
    """`mathpo serve --model A --compare B` in a subprocess; yields (base url, workdir, root)."""
    root = tmp_path_factory.mktemp("serve")
    models = [save_untied_tiny_model(root / name, tokenizer, seed) for name, seed in (("model-a", 0), ("model-b", 1))]
    workdir = root / "cwd"
    workdir.mkdir()
    proc, base = start_server(models, workdir, "--max-new-tokens", str(MAX_TOKENS), "--queue", str(QUEUE))
    yield base, workdir, root
    stop_server(proc)


def test_serves_loopback_only_and_lists_both_models(server):
    base, _, root = server
    with urllib.request.urlopen(base + "/v1/models") as r:
        ids = [m["id"] for m in json.loads(r.read())["data"]]
    assert ids == [str(root / "model-a"), str(root / "model-b")]
    # Bound to 127.0.0.1 only: the kernel's table of listening sockets says where.
    port = int(base.rsplit(":", 1)[1])
    if not Path("/proc/net/tcp").exists():
        return
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:
                    listening.append(addr)
    assert listening == ["0100007F"], listening  # 127.0.0.1, little-endian hex; not 0.0.0.0 or ::


def test_twenty_concurrent_requests_all_answered_or_busy(server):
    base, _, root = server
    url = base + "/v1/chat/completions"
    barrier = threading.Barrier(20)
    results: list = [None] * 20

    def call(i: int):
        body = {"model": str(root / "model-a"), "messages": [{"role": "user", "content": f"What is {i} + 1?"}],
                "max_tokens": MAX_TOKENS, "temperature": 0, "stream": i % 2 == 1}
        barrier.wait()
        try:
            results[i] = post(url, body)
        except Exception as e:  # a dropped connection would be a lost request
            results[i] = ("error", repr(e))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    statuses = [r[0] for r in results]
    assert all(s in (200, 429) for s in statuses), results  # none lost, no other errors
    ok = [i for i, s in enumerate(statuses) if s == 200]
    busy = [i for i, s in enumerate(statuses) if s == 429]
    # 20 at once against 1 running + QUEUE waiting: some must be told busy (unless each answer took
    # less time than the requests took to arrive, which 48 tokens apiece rule out).
    assert len(ok) >= 1 + QUEUE and busy, statuses
    for i in busy:
        err = results[i][1]["error"]
        assert err["code"] == "server_busy" and "busy" in err["message"]
    for i in ok:
        body = results[i][1]
        if i % 2:  # streamed: SSE lines ending with [DONE]
            events = [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]
            assert events[-1] == "[DONE]"
            text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                           for e in events[:-1] if json.loads(e)["choices"])
        else:
            text = body["choices"][0]["message"]["content"]
            assert body["usage"]["completion_tokens"] == MAX_TOKENS
        assert text.strip()
    # Still up, and the waiting line is free again.
    status, body = post(url, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"


@pytest.fixture(scope="module")
def playwright_api():
    """Playwright's sync API, or a skip naming the extra (before any server starts)."""
    try:
        api = require("playwright.sync_api", "test", "the browser test")
    except UserError as e:
        pytest.skip(str(e))
    if CHROMIUM is None:
        pytest.skip("Chromium not found (no `chromium` on PATH, no /usr/bin/chromium): `make test` installs "
                    "Debian's package, or run `apt-get install chromium`")
    return api


def test_page_in_headless_chromium(playwright_api, server):
    expect, sync_playwright = playwright_api.expect, playwright_api.sync_playwright
    base, workdir, root = server
    question = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell?"
    # What each model answers greedily through the API, for the same prompt the page renders.
    user = prompts.get(prompts.DEFAULT).user.replace("{question}", question)
    expected = []
    for name in ("model-a", "model-b"):
        status, body = post(base + "/v1/chat/completions", {"model": str(root / name), "temperature": 0,
                                                            "messages": [{"role": "user", "content": user}]})
        assert status == 200
        expected.append(body["choices"][0]["message"]["content"])
    shots = Path(os.environ.get("MATHPO_SCREENSHOT_DIR") or workdir.parent / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/", timeout=30_000)
            page.locator("#question textarea").fill(question)
            page.locator("#solve").click()
            for i, text in enumerate(expected):
                answer = page.locator(f"#answer-{i}")
                expect(answer).to_contain_text("Final answer", timeout=30_000)
                pred = extract_answer(text)[0]
                expect(answer).to_contain_text(pred if pred is not None else "none found")
                expect(answer).to_contain_text("cut off")  # tiny models run to the token limit
                shown = page.locator(f"#solution-{i}").inner_text()
                words = [w for w in text.split() if w.isalpha()][:3]
                assert words and all(w in shown for w in words), (words, shown)
            assert expected[0] != expected[1]  # two models, two different answers side by side
            page.screenshot(path=str(shots / "serve-greedy.png"), full_page=True)

            # k = 3 sampled solutions: a majority answer with its share, and every sample's answer.
            page.locator("#k input[type=number]").fill("3")
            page.locator("#k input[type=number]").press("Enter")
            page.locator("#solve").click()
            expect(page.locator("#answer-0")).to_contain_text("Majority answer", timeout=30_000)
            expect(page.locator("#samples-0")).to_contain_text("3")
            assert page.locator("#samples-0 tbody tr").count() == 3
            expect(page.locator("#answer-1")).to_contain_text("Majority answer", timeout=30_000)
            page.screenshot(path=str(shots / "serve-k3.png"), full_page=True)
        finally:
            browser.close()
    png = (shots / "serve-greedy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert not any(workdir.iterdir())  # no --log-dir: the server wrote nothing where it ran
