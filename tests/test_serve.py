"""`mathpo serve` in-process: the gate, streaming generation, what the page renders, the OpenAI API.

Tiny random models with an untied output layer (so greedy text varies, unlike the tied fixture,
which repeats its last token). The real server in a browser is in test_serve_browser.py.
"""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys

import pytest
import torch

from mathpo.serve import render
from mathpo.serve.engine import Busy, Gate, GenParams, ServedModel


def untied_tiny_model(tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(cfg).eval()


def save_untied_tiny_model(path, tokenizer, seed: int = 0):
    """A folder `mathpo serve --model` can load."""
    untied_tiny_model(tokenizer, seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine 2 threads run ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine(tokenizer):
    return ServedModel("tiny", untied_tiny_model(tokenizer), tokenizer, max_waiting=2)


# ---- the gate -------------------------------------------------------------------------------------

def test_gate_admits_one_running_plus_waiting_then_refuses():
    gate = Gate(max_waiting=2)
    tickets = [gate.admit() for _ in range(3)]
    assert gate.load == 3
    with pytest.raises(Busy, match="2 request"):
        gate.admit()
    tickets[0].release()
    tickets[0].release()  # idempotent
    assert gate.load == 2
    tickets.append(gate.admit())
    del tickets
    gc.collect()
    assert gate.load == 0  # tickets dropped unused give their places back


def test_gate_with_no_waiting_room_refuses_while_running():
    gate = Gate(max_waiting=0)
    t = gate.admit()
    with pytest.raises(Busy):
        gate.admit()
    t.release()
    gate.admit().release()


def test_gate_is_first_come_first_served_and_a_cancelled_waiter_leaves_at_once():
    import threading
    import time

    gate = Gate(max_waiting=3)
    running = gate.admit()
    assert running.start() and running.wait_turn()
    order, tickets, threads = [], [gate.admit() for _ in range(3)], []
    for name, t in zip("abc", tickets):
        def wait(name=name, t=t):
            if t.start() and t.wait_turn():
                order.append(name)
                t.leave()
            t.release()
        threads.append(threading.Thread(target=wait))
        threads[-1].start()
        time.sleep(0.05)  # arrival order a, b, c
    t0 = time.time()
    tickets[1].cancel()  # b gives up while waiting
    threads[1].join(5)
    assert not threads[1].is_alive() and time.time() - t0 < 1 and gate.load == 3
    running.leave()
    running.release()
    for t in threads:
        t.join(5)
    assert order == ["a", "c"] and gate.load == 0


def test_cancelling_an_unstarted_ticket_frees_its_place():
    gate = Gate(max_waiting=0)
    t = gate.admit()
    t.cancel()
    assert gate.load == 0 and not t.start()


# ---- generation ---------------------------------------------------------------------------------------

def test_stream_grows_and_ends_like_complete(engine):
    prompt = engine.question_prompt("What is 2 + 3?")
    params = GenParams(max_new_tokens=12)
    seen = [s[0].text for s in engine.stream(prompt, params)]
    assert len(seen) >= 12 and all(b.startswith(a) for a, b in zip(seen, seen[1:]))
    final = engine.complete(prompt, params)
    assert final[0].text == seen[-1] and final[0].text.strip()
    assert final[0].finish == "length" and final[0].tokens == 12
    assert engine.gate.load == 0


def test_greedy_n_gives_identical_answers_and_sampling_differs(engine):
    prompt = engine.question_prompt("What is 7 times 8?")
    greedy = engine.complete(prompt, GenParams(n=3, max_new_tokens=8))
    assert len(greedy) == 3 and len({c.text for c in greedy}) == 1
    sampled = engine.complete(prompt, GenParams(n=3, max_new_tokens=8, temperature=1.0, seed=1))
    assert len({c.text for c in sampled}) > 1
    again = engine.complete(prompt, GenParams(n=3, max_new_tokens=8, temperature=1.0, seed=1))
    assert [c.text for c in again] == [c.text for c in sampled]


def test_stop_string_cuts_the_text(engine):
    prompt = engine.question_prompt("What is 2 + 3?")
    full = engine.complete(prompt, GenParams(max_new_tokens=16))[0].text
    stop = full.split()[3]
    cut = engine.complete(prompt, GenParams(max_new_tokens=16, stop=(stop,)))[0]
    assert cut.finish == "stop" and stop not in cut.text and full.startswith(cut.text)


def test_calculator_forces_the_result(tokenizer):
    calc = ServedModel("calc", untied_tiny_model(tokenizer), tokenizer, calculator=True)
    prompt = "Step 1: she has 48 / 2 + 7 = <<48/2+7="
    forced = calc.complete(prompt, GenParams(max_new_tokens=6))[0].text
    assert forced.startswith("31>>")
    free = ServedModel("free", calc.model, tokenizer).complete(prompt, GenParams(max_new_tokens=6))[0].text
    assert not free.startswith("31>>")  # the random model alone would not write it


def test_closing_a_stream_frees_the_model(engine):
    prompt = engine.question_prompt("What is 2 + 3?")
    it = engine.stream(prompt, GenParams(max_new_tokens=500))
    next(it)
    assert engine.gate.load == 1
    it.close()
    assert engine.gate.load == 0
    assert engine.complete(prompt, GenParams(max_new_tokens=2))[0].tokens == 2


def test_an_abandoned_stream_frees_the_model_without_the_garbage_collector(engine):
    """Issue 13: a consumer that stops reading and is never closed (a client that hung up) must not
    hold the model until a GC cycle finalizes it; cancelling its ticket is enough."""
    prompt = engine.question_prompt("What is 2 + 3?")
    gc.disable()
    try:
        ticket = engine.gate.admit()
        it = engine.stream(prompt, GenParams(max_new_tokens=1500), ticket)
        next(it)
        ticket.cancel()  # what the API does when the client disconnects; `it` stays suspended
        assert ticket.done.wait(10) and ticket.steps < 100
        assert engine.complete(prompt, GenParams(max_new_tokens=2))[0].tokens == 2
        assert engine.gate.load == 0
    finally:
        gc.enable()
    del it


def test_busy_engine_refuses(engine):
    held = [engine.gate.admit() for _ in range(3)]  # 1 running + 2 waiting
    try:
        with pytest.raises(Busy):
            next(engine.stream("hi", GenParams(max_new_tokens=2)))
    finally:
        for t in held:
            t.release()


# ---- what the page shows ------------------------------------------------------------------------------

def test_solution_markdown_escapes_model_html_and_marks_calculator_and_steps():
    md = render.solution_markdown("Step 1: 48/2 = <<48/2=24>>24 <img src=x onerror=alert(1)>\nStep 2: \\boxed{24}")
    assert "<img" not in md and "&lt;img" in md
    assert '<span class="calc" title="calculator call"><b>calc</b> 48/2 = 24</span>24' in md
    assert "**Step 1:**" in md and "**Step 2:**" in md
    assert render.solution_markdown("", streaming=False) == "_(empty)_"
    assert render.solution_markdown("abc", streaming=True).endswith("▌")


@pytest.mark.parametrize("preds,answer,count", [
    (["24", "24.0", "3", None], "24", 2),
    (["3", "24", "24", "3"], "3", 2),  # a tie goes to the earliest answer
    ([None, None], None, 0),
    (["\\frac{1}{2}", "0.5", "1/2"], "\\frac{1}{2}", 3),
])
def test_vote_groups_equivalent_answers(preds, answer, count):
    v = render.vote(preds)
    assert (v.answer, v.count, v.total) == (answer, count, len(preds))


def test_vote_and_answer_markdown():
    head, table, v = render.vote_markdown(["24", "24.0", "3"], [True, True, True])
    assert "`24` given by 2 of 3 samples (67%)" in head and table.count("| done |") == 3
    head, _, _ = render.vote_markdown(["24", None, None], [True, False, True])
    assert "2 done" in head
    assert "`5`" in render.answer_markdown("so the answer is \\boxed{5}.", "stop")
    assert "cut off" in render.answer_markdown("5 6 7", "length")
    assert "none found" in render.answer_markdown("no digits here", "stop")
    assert render.answer_markdown("anything", None) == "_reasoning..._"


def test_page_view_shows_a_majority_sample():
    from mathpo.serve.engine import Choice

    choices = [Choice("so \\boxed{3}", 4, "stop"), Choice("thus \\boxed{7}", 4, "stop"),
               Choice("\\boxed{7}", 2, "stop")]
    answer, solution, table = render.page_view(choices, done=True)
    assert "`7` given by 2 of 3" in answer and "sample 2 of 3" in solution and "thus" in solution


def test_page_solver_answers_checks_and_logs(engine, tmp_path):
    from mathpo.serve.engine import Limits
    from mathpo.serve.log import RequestLog
    from mathpo.serve.solve import page_solver

    solve = page_solver(engine, Limits(max_new_tokens=6, max_k=3, max_question_chars=40), RequestLog(tmp_path))
    assert "Type a question" in list(solve("  ", 1, 0.7))[-1][0]
    assert "too long" in list(solve("x" * 41, 1, 0.7))[-1][0]
    answer, solution, table = list(solve("What is 2 + 3?", 1, 0.7))[-1]
    assert "Final answer" in answer and "cut off" in answer and solution.strip() and table == ""
    answer, solution, table = list(solve("What is 2 + 3?", 9, 0.7))[-1]  # k clipped to max_k
    assert "Majority answer" in answer and "sample 1 of 3" in solution and table.count("| done |") == 3
    rows = [json.loads(ln) for ln in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert [(r["source"], r["k"], len(r["completions"])) for r in rows] == [("page", 1, 1), ("page", 3, 3)]
    held = [engine.gate.admit() for _ in range(3)]
    try:
        assert "busy" in list(solve("What is 2 + 3?", 1, 0.7))[-1][0]
    finally:
        for t in held:
            t.release()


# ---- the OpenAI API, in-process ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(engine, tokenizer):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mathpo.serve.api import router
    from mathpo.serve.engine import Limits

    other = ServedModel("other", untied_tiny_model(tokenizer, seed=1), tokenizer)
    app = FastAPI()
    app.include_router(router({"tiny": engine, "other": other}, Limits(max_new_tokens=16, max_k=4,
                                                                        max_prompt_chars=500)))
    return TestClient(app)


def chat(client, **body):
    body = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "temperature": 0, **body}
    return client.post("/v1/chat/completions", json=body)


def test_api_completion_schema(client, tokenizer):
    r = chat(client, max_tokens=6)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"].strip()
    assert choice["finish_reason"] == "length"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                           add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    assert body["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 6, "total_tokens": n_prompt + 6}
    other = chat(client, max_tokens=6, model="other").json()
    assert other["model"] == "other" and other["choices"][0]["message"]["content"] != choice["message"]["content"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny", "other"]


def test_api_clips_max_tokens_and_returns_n_choices(client):
    body = chat(client, max_tokens=10 ** 6, n=2, temperature=1.0, seed=3).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["usage"]["completion_tokens"] <= 2 * 16


def test_api_stream_matches_non_streaming(client):
    plain = chat(client, max_tokens=8).json()["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "What is 2 + 3?"}], "temperature": 0,
                             "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]" and all(ln.startswith("data: ") for ln in lines)
    chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == plain
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("body,status,fragment", [
    ({"messages": []}, 400, "non-empty"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"messages": [{"role": "user", "content": "x" * 600}]}, 400, "too long"),
    ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}, 404, "not served"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 9}, 400, "'n'"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400, "temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "text"),
])
def test_api_errors_are_openai_shaped(client, body, status, fragment):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status
    err = r.json()["error"]
    assert fragment in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_api_bad_json_and_busy(client, engine):
    r = client.post("/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    held = [engine.gate.admit() for _ in range(3)]
    try:
        r = chat(client, max_tokens=2)
    finally:
        for t in held:
            t.release()
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "server_busy" and "busy" in r.json()["error"]["message"]
    assert chat(client, max_tokens=2).status_code == 200


def test_api_text_parts_and_log(tmp_path, engine):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from mathpo.serve.api import router
    from mathpo.serve.engine import Limits
    from mathpo.serve.log import RequestLog

    log = RequestLog(tmp_path / "logs")
    app = FastAPI()
    app.include_router(router({"tiny": engine}, Limits(max_new_tokens=4), log))
    c = TestClient(app)
    r = c.post("/v1/chat/completions", json={"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2 + 3?"}]}]})
    assert r.status_code == 200
    rows = [json.loads(ln) for ln in (tmp_path / "logs" / "requests.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["source"] == "api" and rows[0]["model"] == "tiny"
    assert rows[0]["messages"][1]["content"] == "What is 2 + 3?"
    assert rows[0]["completions"] == [r.json()["choices"][0]["message"]["content"]]


def test_examples_fall_back_to_builtin(tmp_path):
    from mathpo.serve import BUILTIN_EXAMPLES, example_questions

    assert example_questions("gsm8k", data_dir=str(tmp_path)) == BUILTIN_EXAMPLES
    assert example_questions(None) == BUILTIN_EXAMPLES


# ---- the command line ---------------------------------------------------------------------------------

def test_serve_refuses_a_taken_port_and_bad_limits(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "mathpo.cli", "serve", "--model", str(tiny_model_dir),
                            "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot listen on 127.0.0.1" in r.stderr and len(r.stderr.splitlines()) == 1
    r = subprocess.run([sys.executable, "-m", "mathpo.cli", "serve", "--model", str(tiny_model_dir), "--queue", "-1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--queue" in r.stderr

