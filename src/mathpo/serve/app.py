"""The Gradio page of `mathpo serve`: ask a math question, watch one or two models reason.

One column per served model (two with `--compare`, both answering the same question at once).
Each column streams the solution (steps in bold, calculator calls marked), shows the extracted
final answer apart, and with k > 1 samples k solutions and shows the majority answer, its share,
and every sample's answer.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from .engine import Limits, ServedModel
from .log import RequestLog
from .solve import page_solver

CSS = """
.calc { background: #fff1c2; color: #5a4500; border: 1px solid #e6c35c; border-radius: 4px;
        padding: 0 4px; font-family: ui-monospace, monospace; white-space: nowrap; }
.final-answer { font-size: 1.15em; }
"""
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "\\[", "right": "\\]", "display": True},
         {"left": "\\(", "right": "\\)", "display": False}]  # no single `$`: GSM8K text is full of dollars


def _label(name: str) -> str:
    """A model's name for headings: the last two parts of a long path."""
    parts = Path(name).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else name


def build_page(engines: list[ServedModel], limits: Limits, examples: list[str] = (),
               log: RequestLog | None = None, max_waiting: int = 8) -> gr.Blocks:
    names = " vs ".join(f"`{_label(e.name)}`" for e in engines)
    with gr.Blocks(title="mathpo: watch a model reason", analytics_enabled=False) as page:
        gr.Markdown(f"## Ask {names} a math question\n"
                    "The solution streams in as the model writes it; calculator calls show as "
                    '<span class="calc"><b>calc</b> expression = result</span>; the final answer is extracted with '
                    "the same grader as `mathpo eval`. Model output is only displayed, never run.")
        question = gr.Textbox(label="Question", lines=3, max_length=limits.max_question_chars, elem_id="question",
                              placeholder="e.g. A baker makes 24 muffins and sells 3/4 of them. How many are left?")
        with gr.Row(equal_height=True):
            k = gr.Slider(1, limits.max_k, value=1, step=1, label="Solutions (k)", elem_id="k",
                          info="k = 1: one greedy solution; k > 1: sample k and take the majority answer")
            temperature = gr.Slider(0.1, 1.5, value=0.7, step=0.05, label="Temperature", info="used when k > 1")
            button = gr.Button("Solve", variant="primary", elem_id="solve", scale=0, min_width=140)
        with gr.Row():
            for i, engine in enumerate(engines):
                with gr.Column():
                    if len(engines) > 1:
                        gr.Markdown(f"### {'AB'[i]}: `{_label(engine.name)}`")
                    answer = gr.Markdown(elem_id=f"answer-{i}", elem_classes="final-answer")
                    solution = gr.Markdown(elem_id=f"solution-{i}", latex_delimiters=LATEX, line_breaks=True,
                                           label="Solution", show_label=False, min_height=120)
                    table = gr.Markdown(elem_id=f"samples-{i}")
                    # One event per model: with --compare both columns answer the same click at once.
                    gr.on([button.click, question.submit], page_solver(engine, limits, log),
                          inputs=[question, k, temperature], outputs=[answer, solution, table],
                          concurrency_limit=1, concurrency_id=f"model-{i}", show_progress="hidden")
        if examples:
            gr.Examples([[q] for q in examples], inputs=[question], label="Example questions", examples_per_page=6)
    # The page's own queue: beyond this many waiting events Gradio says the queue is full.
    page.queue(max_size=(max_waiting + 1) * len(engines), default_concurrency_limit=1)
    return page
