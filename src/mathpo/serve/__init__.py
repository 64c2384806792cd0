"""The web demo behind `mathpo serve`: a Gradio page and an OpenAI-compatible API on one server.

    mathpo serve --model M [--compare M2] [--host 127.0.0.1] [--port 7860] [--log-dir DIR]

Modules: engine (generation, streaming, limits), gate (the bounded per-model waiting line),
render (what the page shows), solve (the page's handler), app (the Gradio page layout), api
(`/v1/chat/completions`, `/v1/models`), log (`--log-dir`).
`build_app` puts the API routes and the page on one FastAPI app, served by uvicorn.
"""

from __future__ import annotations

import os

# Before gradio is imported anywhere: no usage reports from a local demo.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from .engine import Busy, GenParams, Limits, ServedModel  # noqa: E402

__all__ = ["Busy", "ServedModel", "GenParams", "Limits", "build_app", "example_questions", "BUILTIN_EXAMPLES"]

BUILTIN_EXAMPLES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "A baker makes 24 muffins and sells 3/4 of them. How many muffins are left?",
    "What is the sum of the first 20 positive odd numbers?",
    "Solve for x: 3x + 7 = 22.",
]


def example_questions(dataset: str | None = "gsm8k", split: str = "test", data_dir: str | None = None,
                      count: int = 8) -> list[str]:
    """The first `count` questions of a dataset, or a few built-in ones when it cannot be read."""
    if not dataset:
        return list(BUILTIN_EXAMPLES)
    from .. import data
    from ..errors import UserError

    try:
        return [r["question"] for r in data.load(dataset, split, count, data_dir)]
    except UserError:
        return list(BUILTIN_EXAMPLES)


def build_app(engines: list[ServedModel], limits: Limits = Limits(), examples: list[str] = (),
              log_dir: str | None = None, max_waiting: int = 8):
    """A FastAPI app: `/v1/...` routes first, the Gradio page mounted at `/`."""
    from ..errors import require

    gr = require("gradio", "serve", "mathpo serve")
    from fastapi import FastAPI

    from .api import router
    from .app import CSS, build_page
    from .log import RequestLog

    log = RequestLog(log_dir) if log_dir else None
    app = FastAPI(title="mathpo serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router({e.name: e for e in engines}, limits, log))
    page = build_page(engines, limits, examples, log, max_waiting)
    return gr.mount_gradio_app(app, page, path="/", css=CSS, ssr_mode=False, mcp_server=False,
                               footer_links=[], show_error=True)
