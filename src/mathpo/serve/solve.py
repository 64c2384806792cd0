"""The page's request handler of `mathpo serve`: check the question, take a place in the model's
line (or say "busy"), stream the k solutions, render each update, log when `--log-dir` is set.

Kept apart from app.py (the layout) so it runs and is tested without Gradio.
"""

from __future__ import annotations

import time

from .engine import Busy, GenParams, Limits, ServedModel
from .log import RequestLog
from .render import extract_answer, page_view

UPDATE_EVERY = 0.1  # seconds between page updates while streaming


def page_solver(engine: ServedModel, limits: Limits, log: RequestLog | None = None):
    """The page's handler for one model: a generator of (answer, solution, samples table) updates."""

    def solve(question: str, k: float, temperature: float):
        question = (question or "").strip()
        if not question:
            yield "_Type a question first._", "", ""
            return
        if len(question) > limits.max_question_chars:
            yield (f"**Question too long:** {len(question)} characters (limit {limits.max_question_chars}).",
                   "", "")
            return
        k = max(1, min(int(k), limits.max_k))
        params = GenParams(n=k, max_new_tokens=limits.max_new_tokens,
                           temperature=0.0 if k == 1 else float(temperature))
        try:
            ticket = engine.gate.admit()
        except Busy as e:
            yield f"⏳ **Server {e}.**", "", ""
            return
        yield "_waiting for the model..._" if engine.gate.load > 1 else "_reasoning..._", "", ""
        last, choices = 0.0, []
        try:
            for choices in engine.stream(engine.question_prompt(question), params, ticket):
                done = all(c.finish for c in choices)
                if done or time.monotonic() - last >= UPDATE_EVERY:
                    last = time.monotonic()
                    yield page_view(choices, done)
        except Exception as e:  # show it where the answer would be; the server keeps serving
            yield f"**Error:** generation failed ({type(e).__name__}: {e})", "", ""
            return
        if log:
            log.write("page", engine.name, question=question, k=k, temperature=params.temperature,
                      completions=[c.text for c in choices], answers=[extract_answer(c.text)[0] for c in choices])

    return solve
