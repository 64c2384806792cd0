"""The OpenAI-compatible endpoint of `mathpo serve`: `POST /v1/chat/completions` and `GET /v1/models`.

Other tools (and `mathpo pairs`' judge-based localizer) point an OpenAI client at
`http://127.0.0.1:PORT/v1`. Requests follow the chat completions schema: `messages` in;
`choices[i].message.content`, `finish_reason` and `usage` out; with `"stream": true`, server-sent
events `data: {chunk}` ending with `data: [DONE]`. Supported fields: model, messages, max_tokens
(or max_completion_tokens; clipped to the server's cap), temperature (default 1, as OpenAI's),
top_p, n, seed, stop, stream, stream_options.include_usage. A full waiting line answers HTTP 429
with an OpenAI-style error body; bad requests answer 400, an unknown model 404.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .engine import Busy, GenParams, Limits, ServedModel
from .log import RequestLog


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
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
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
    options = {"stream": bool(body.get("stream")),
               "include_usage": bool((body.get("stream_options") or {}).get("include_usage"))}
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
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ApiError(400, "the request body is not valid JSON") from None
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
        # Chat templates carry their own special tokens.
        stream = engine.stream(prompt, params, ticket, add_special_tokens=False)
        if options["stream"]:
            return StreamingResponse(_events(engine, prompt, params, stream, head, options["include_usage"],
                                             messages, log),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            choices = await run_in_threadpool(_last, stream)
        except Exception as e:  # a generation failure: say so in the API's own shape, keep serving
            return ApiError(500, f"generation failed: {type(e).__name__}: {e}", "server_error").response()
        usage = _usage(engine, prompt, choices)
        if log:
            log.write("api", engine.name, messages=messages, completions=[c.text for c in choices])
        return {**head, "object": "chat.completion", "system_fingerprint": None, "usage": usage,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                             "logprobs": None, "finish_reason": c.finish} for i, c in enumerate(choices)]}

    return api


def _last(stream):
    last = []
    for last in stream:  # noqa: B007 (the loop keeps the last item in last)
        pass
    return last


def _usage(engine: ServedModel, prompt: str, choices) -> dict:
    p = engine.count_tokens(prompt)
    c = sum(ch.tokens for ch in choices)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _events(engine: ServedModel, prompt: str, params: GenParams, stream, head: dict, include_usage: bool, messages,
            log):
    """Server-sent events for one streamed request (a sync generator; Starlette runs it in a thread)."""
    def event(choices: list[dict], usage=None) -> str:
        chunk = {**head, "object": "chat.completion.chunk", "system_fingerprint": None, "choices": choices}
        if include_usage:
            chunk["usage"] = usage
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    sent: list[str] = []
    closed: list[bool] = []
    choices = []
    hold = max((len(s) for s in params.stop), default=1) - 1
    try:
        for choices in stream:
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
            yield event([], _usage(engine, prompt, choices))
        if log:
            log.write("api", engine.name, messages=messages, completions=[c.text for c in choices])
    except Exception as e:  # headers are sent already: report in the stream, as OpenAI does
        err = {"message": f"generation failed: {type(e).__name__}: {e}", "type": "server_error",
               "param": None, "code": None}
        yield f"data: {json.dumps({'error': err})}\n\n"
    finally:
        stream.close()
    yield "data: [DONE]\n\n"

