"""The OpenAI-compatible endpoint of `mathpo serve`: `POST /v1/chat/completions` and `GET /v1/models`.

Other tools (and `mathpo pairs`' judge-based localizer) point an OpenAI client at
`http://127.0.0.1:PORT/v1`. Requests follow the chat completions schema: `messages` in;
`choices[i].message.content`, `finish_reason` and `usage` out; with `"stream": true`, server-sent
events `data: {chunk}` ending with `data: [DONE]`. Supported fields: model, messages, max_tokens
(or max_completion_tokens; clipped to the server's cap), temperature (default 1, as OpenAI's),
top_p, n, seed, stop, stream, stream_options.include_usage. A full waiting line answers HTTP 429
with an OpenAI-style error body; bad requests answer 400, an unknown model 404, a body over
the size limit 413. A client that disconnects (streaming or not) cancels its generation, which
stops at the next token; with `--log-dir` such a request is logged with `"client": "gone"`.
"""

from __future__ import annotations

import json
import math
import time
import uuid

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from .engine import Busy, GenParams, Limits, ServedModel, Ticket
from .log import RequestLog

DISCONNECT_POLL = 0.1  # seconds between checks that a non-streaming client is still there


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type_, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}
        headers = {"Retry-After": "1"} if self.status == 429 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def busy_error(e: Busy) -> ApiError:
    return ApiError(429, f"server {e}", "rate_limit_error", code="server_busy")


def _number(body: dict, key: str, default, kind, lo, hi):
    value = body.get(key)
    if value is None:
        return default
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or (kind is int and value != int(value))):
        raise ApiError(400, f"'{key}' must be a {kind.__name__}", param=key)
    if not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be between {lo} and {hi}, got {value}", param=key)
    return kind(value)


def _messages(body: dict, limits: Limits) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out, chars = [], 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            raise ApiError(400, f"messages[{i}] needs a role (system, user, assistant)", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise ApiError(400, f"messages[{i}]: only text content parts are supported", param="messages")
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string", param="messages")
        chars += len(content)
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": content})
    if chars > limits.max_prompt_chars:
        raise ApiError(400, f"messages too long: {chars} characters (limit {limits.max_prompt_chars})",
                       param="messages", code="context_length_exceeded")
    return out


def parse_request(body, engines: dict[str, ServedModel],
                  limits: Limits) -> tuple[ServedModel, list[dict], GenParams, dict]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    name = body.get("model") or next(iter(engines))
    if not isinstance(name, str):
        raise ApiError(400, "'model' must be a string", param="model")
    if name not in engines:
        raise ApiError(404, f"model '{name}' is not served here (models: {', '.join(engines)})",
                       param="model", code="model_not_found")
    messages = _messages(body, limits)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _number({"max_tokens": max_tokens}, "max_tokens", limits.max_new_tokens, int, 1, 10 ** 9)
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of at most 4 strings", param="stop")
    params = GenParams(
        n=_number(body, "n", 1, int, 1, limits.max_k),
        max_new_tokens=min(max_tokens, limits.max_new_tokens),
        temperature=_number(body, "temperature", 1.0, float, 0, 2),
        top_p=_number(body, "top_p", 1.0, float, 1e-6, 1),
        seed=_number(body, "seed", None, int, -2 ** 63, 2 ** 63 - 1),
        stop=tuple(stop),
    )
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    options = {"stream": bool(body.get("stream")), "include_usage": bool(stream_options.get("include_usage"))}
    return engines[name], messages, params, options


def router(engines: dict[str, ServedModel], limits: Limits, log: RequestLog | None = None) -> APIRouter:
    api = APIRouter()

    @api.get("/v1/models")
    def list_models():
        return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "mathpo"}
                                           for n in engines]}

    @api.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await _read_json(request, body_limit(limits))
            engine, messages, params, options = parse_request(body, engines, limits)
            try:
                prompt = engine.chat_prompt(messages)
            except Exception as e:  # a chat template that rejects this conversation (roles, order)
                raise ApiError(400, f"cannot apply the chat template: {e}", param="messages") from None
            ticket = engine.gate.admit()
        except Busy as e:
            return busy_error(e).response()
        except ApiError as e:
            return e.response()
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": rid, "created": created, "model": engine.name}
        call = _Call(engine, messages, ticket, log)
        # Chat templates carry their own special tokens.
        stream = engine.stream(prompt, params, ticket, add_special_tokens=False)
        if options["stream"]:
            # The background task runs after the response, also after a disconnect: the ticket is
            # cancelled there at the latest, never left to the garbage collector.
            return StreamingResponse(_events(engine, prompt, params, stream, head, options["include_usage"], call),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                                     background=BackgroundTask(call.finish))
        choices, error, gone = await _complete(request, stream, ticket)
        if gone:  # nobody reads this answer
            await run_in_threadpool(call.finish)
            return JSONResponse({}, status_code=499)
        if error is not None:  # a generation failure: say so in the API's own shape, keep serving
            return ApiError(500, f"generation failed: {type(error).__name__}: {error}", "server_error").response()
        call.answered(choices)
        usage = _usage(engine, prompt, choices)
        return {**head, "object": "chat.completion", "system_fingerprint": None, "usage": usage,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                             "logprobs": None, "finish_reason": c.finish} for i, c in enumerate(choices)]}

    return api


def body_limit(limits: Limits) -> int:
    """Bytes a request body may have: the longest conversation, every character JSON-escaped, plus room."""
    return 6 * limits.max_prompt_chars + 64 * 1024


async def _read_json(request: Request, limit: int):
    # Read to the end even past the limit (keeping none of it): a client still sending when the
    # connection closes would lose the 413.
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total <= limit:
            chunks.append(chunk)
    if total > limit:
        raise ApiError(413, f"request body too large: {total} bytes (limit {limit})")
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8, nesting too deep
        raise ApiError(400, "the request body is not valid JSON") from None


class _Call:
    """One admitted request: logged once (`--log-dir`), answered or with its client gone."""

    def __init__(self, engine: ServedModel, messages: list[dict], ticket: Ticket, log: RequestLog | None):
        self.engine, self.messages, self.ticket, self.log = engine, messages, ticket, log
        self.logged = False

    def answered(self, choices) -> None:
        if self.log:
            self.log.write("api", self.engine.name, messages=self.messages, completions=[c.text for c in choices])
        self.logged = True

    def finish(self) -> None:
        """After the response: stop the generation if it still runs (client gone) and log that."""
        self.ticket.cancel()
        if not self.logged and self.log:
            self.ticket.done.wait(timeout=60)  # a token at most after cancel
            self.log.write("api", self.engine.name, messages=self.messages, client="gone", steps=self.ticket.steps)
        self.logged = True


async def _complete(request: Request, stream, ticket: Ticket):
    """(choices, error, client gone) for a non-streaming request; a client that disconnects
    meanwhile cancels the ticket, so its generation stops at the next token."""
    gone = []

    async def watch():
        while not await request.is_disconnected():
            await anyio.sleep(DISCONNECT_POLL)
        gone.append(True)
        ticket.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        try:
            return await run_in_threadpool(_last, stream), None, bool(gone)
        except Exception as e:
            return None, e, bool(gone)
        finally:
            tg.cancel_scope.cancel()


def _last(stream):
    last = []
    for last in stream:  # noqa: B007 (the loop keeps the last item in last)
        pass
    return last


def _usage(engine: ServedModel, prompt: str, choices) -> dict:
    p = engine.count_tokens(prompt)
    c = sum(ch.tokens for ch in choices)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _events(engine: ServedModel, prompt: str, params: GenParams, stream, head: dict, include_usage: bool,
                  call: _Call):
    """Server-sent events for one streamed request. Each step is awaited in a worker thread that
    a disconnect abandons at once (the cancelled ticket then stops the generation itself)."""
    def event(choices: list[dict], usage=None) -> str:
        chunk = {**head, "object": "chat.completion.chunk", "system_fingerprint": None, "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    sent: list[str] = []
    closed: list[bool] = []
    last: list = []
    hold = max((len(s) for s in params.stop), default=1) - 1
    try:
        while (choices := await anyio.to_thread.run_sync(next, stream, None, abandon_on_cancel=True)) is not None:
            last = choices
            if not sent:
                sent, closed = [""] * len(choices), [False] * len(choices)
                yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None} for i in range(len(choices))])
            parts = []
            for i, c in enumerate(choices):
                if closed[i]:
                    continue
                # Hold back a possibly half-decoded character and a possible stop-string prefix.
                ready = c.text if c.finish else c.text[:max(0, len(c.text) - hold)].rstrip("\ufffd")
                if ready.startswith(sent[i]) and len(ready) > len(sent[i]):
                    parts.append({"index": i, "delta": {"content": ready[len(sent[i]):]}, "logprobs": None,
                                  "finish_reason": None})
                    sent[i] = ready
                if c.finish:
                    closed[i] = True
                    parts.append({"index": i, "delta": {}, "logprobs": None, "finish_reason": c.finish})
            if parts:
                yield event(parts)
        if include_usage:
            yield event([], _usage(engine, prompt, last))
        call.answered(last)
    except Exception as e:  # headers are sent already: report in the stream, as OpenAI does
        err = {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error",
               "param": None, "code": None}
        yield f"data: {json.dumps({'error': err})}\n\n"
    finally:  # also when a disconnect cancels this generator mid-step
        call.ticket.cancel()
    yield "data: [DONE]\n\n"
