"""What the `mathpo serve` page shows: a solution as Markdown (steps, calculator calls marked), the
extracted final answer, and the majority vote over k samples.

Model text is data: it is HTML-escaped before our own few tags are added, and only ever displayed.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

from .. import grading
from ..grading.metrics import majority_class

# `<<48/2=24>>` (GSM8K's annotation; what the calculator forces), after HTML escaping.
_CALC = re.compile(r"&lt;&lt;([^=\n]{1,200}?)=([^\n]{0,60}?)&gt;&gt;")
_STEP = re.compile(r"^(\s*)(Step \d+:)", re.MULTILINE)


def extract_answer(text: str) -> tuple[str | None, bool]:
    """(answer, strict) with the grader's extraction, so the page agrees with `mathpo grade`."""
    return grading.extract_answer(text)


def same_answer(a: str, b: str) -> bool:
    if a.strip() == b.strip():
        return True
    # The grader's fast tier only: its sympy tier runs in worker processes, too slow for a live page;
    # undecided pairs count as different answers.
    try:
        return bool(grading.fast(a, b))
    except Exception:  # a grader failure on odd model text must not take the page down
        return False


def solution_markdown(text: str, streaming: bool = False) -> str:
    """Escape the model's text, bold 'Step N:', show `<<expr=result>>` as a calculator call."""
    out = html.escape(text, quote=False)
    out = _CALC.sub(lambda m: f'<span class="calc" title="calculator call"><b>calc</b> {m.group(1)} = '
                              f'{m.group(2)}</span>', out)
    out = _STEP.sub(lambda m: f"{m.group(1)}**{m.group(2)}**", out)
    if streaming:
        out += " ▌"
    return out or "_(empty)_"


@dataclass
class Vote:
    answer: str | None
    count: int  # samples giving that answer
    total: int  # samples voted over (all k, also those without an answer)

    @property
    def share(self) -> float:
        return self.count / self.total if self.total else 0.0


def vote(preds: list[str | None]) -> Vote:
    """The most common answer (equivalent answers counted together; ties go to the earliest): the
    grader's majority vote (`grading.metrics`), with the fast tier as the equivalence check."""
    best = majority_class([{"pred": p} for p in preds], same=same_answer)
    return Vote(best[0]["pred"] if best else None, len(best), len(preds))


def answer_markdown(text: str, finish: str | None) -> str:
    """The final answer of one solution, apart from the solution; `finish` None while writing."""
    if finish is None:
        return "_reasoning..._"
    cut = " The solution was cut off at the token limit." if finish == "length" else ""
    pred, strict = extract_answer(text)
    if pred is None:
        return f"**Final answer:** none found  \n<small>{cut}</small>"
    how = "marked by the model" if strict else "the last number: the model marked no final answer"
    return f"**Final answer:** `{_code(pred)}`  \n<small>({how}).{cut}</small>"


def vote_markdown(preds: list[str | None], finished: list[bool]) -> tuple[str, str, Vote]:
    """(majority answer line, table of every sample's answer, the vote) for k sampled solutions.

    `preds[i]` is sample i's extracted answer (None while it is still writing or when it has none).
    """
    rows = ["| sample | answer | |", "|---:|---|---|"]
    for i, (p, f) in enumerate(zip(preds, finished), 1):
        shown = f"`{_code(p)}`" if p is not None else ("_none_" if f else "_..._")
        rows.append(f"| {i} | {shown} | {'done' if f else 'writing'} |")
    v = vote(preds)
    if not all(finished):
        head = f"_sampling {len(preds)} solutions: {sum(finished)} done..._"
    elif v.answer is None:
        head = f"**Majority answer:** none of the {v.total} samples gave an answer"
    else:
        head = (f"**Majority answer:** `{_code(v.answer)}` given by {v.count} of {v.total} samples "
                f"({100 * v.share:.0f}%)")
    return head, "\n".join(rows), v


def page_view(choices, done: bool) -> tuple[str, str, str]:
    """(final answer or majority line, solution, samples table) for the current state of k choices."""
    texts = [c.text for c in choices]
    finished = [c.finish is not None for c in choices]
    if len(choices) == 1:
        finish = choices[0].finish if done else None
        return answer_markdown(texts[0], finish), solution_markdown(texts[0], streaming=not done), ""
    preds = [extract_answer(t)[0] if f else None for t, f in zip(texts, finished)]
    head, table, v = vote_markdown(preds, finished)
    # Once done, show a solution that reached the majority answer.
    shown = next((i for i, p in enumerate(preds) if v.answer is not None and p == v.answer), 0) if done else 0
    note = f"_sample {shown + 1} of {len(choices)}" + (", with the majority answer_" if done and v.answer else "_")
    return head, note + "\n\n" + solution_markdown(texts[shown], streaming=not done), table


def _code(text: str) -> str:
    """Text safe inside an inline code span in a table: one line, no backticks or pipes."""
    return html.escape(" ".join(text.split()), quote=False).replace("`", "'").replace("|", "/")[:80]
