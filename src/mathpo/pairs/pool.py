"""Pool graded samples per question for `mathpo pairs --kind dpo|rft`: the question's prompt,
its unique correct solutions (the reference solution first, written in the template's answer
format) and its unique wrong ones, near-duplicates removed.

Prompt rule: a question's prompt is the `prompt` field most of its rows share (the exact text
that was sampled, so training sees the sampled tokens); rows without one get
`prompts.render(tokenizer, question, template)`. Rows sampled under another prompt (another
template or few-shot set) cannot share a pair with the others and are set aside and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .. import prompts
from ..errors import UserError
from ..grading import metrics
from ..grading.extract import after_hashes, last_boxed
from .similarity import dedup

REQUIRED = ("id", "question", "completion", "correct")


@dataclass
class Pool:
    id: str
    prompt: str
    positives: list[str] = field(default_factory=list)  # reference (when present) first
    negatives: list[str] = field(default_factory=list)
    has_reference: bool = False


def group(rows: list[dict]) -> dict[str, list[dict]]:
    """Graded rows by question id (`grading.metrics.group`), after checking they are graded."""
    for i, r in enumerate(rows):
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise UserError(f"graded row {i + 1} lacks {', '.join(missing)}: pairs need graded samples "
                            "(run `mathpo grade` first)")
    return metrics.group(rows)


def reference_completion(solution: str, gold: str, template: str | prompts.Template) -> str:
    """A reference solution written as the template's answer would be: final answer marked the
    template's way (boxed or '#### N') and, for step templates, one 'Step k:' per line."""
    t = prompts.get(template) if isinstance(template, str) else template
    lines = [s.strip() for s in solution.strip().split("\n") if s.strip()]
    last = lines[-1] if lines else ""
    hashes_line = last.startswith("####")
    if t.answer_format == "boxed":
        if last_boxed(last) is not None:
            answer_line = lines.pop()
        else:
            answer = after_hashes(lines.pop()) if hashes_line else None
            answer_line = f"The final answer is $\\boxed{{{answer or gold}}}$."
    elif after_hashes(last) is not None:
        answer_line = lines.pop()
    else:
        answer_line = f"#### {last_boxed(solution) or gold}"
    if t.answer_start.rstrip().endswith("Step 1:") and lines:
        body = " " + lines[0] + "".join(f"\nStep {k}: {s}" for k, s in enumerate(lines[1:], 2))
    else:
        body = "\n".join(lines)
        body = re.sub(r"^\s+", "", body)
    return t.as_answer((body + "\n" + answer_line) if body else answer_line)


def build_pools(rows: list[dict], tokenizer, template: str, threshold: float,
                stats: dict) -> list[Pool]:
    """One Pool per question; counts dropped duplicates and set-aside rows into `stats`."""
    pools = []
    for qid, qrows in group(rows).items():
        first = qrows[0]
        given = Counter(r["prompt"] for r in qrows if r.get("prompt"))
        if given:
            prompt = given.most_common(1)[0][0]
        else:
            if tokenizer is None and prompts.get(template).chat:
                raise UserError(f"question {qid}: rows carry no prompt and no tokenizer was given to render one")
            prompt = prompts.render(tokenizer, first["question"], template)
        same = [r for r in qrows if not r.get("prompt") or r["prompt"] == prompt]
        stats["rows_other_prompt"] += len(qrows) - len(same)
        solution = next((r["solution"] for r in qrows if r.get("solution")), None)
        pos = [reference_completion(solution, str(first.get("gold", "")), template)] if solution else []
        pos += [r["completion"] for r in same if r["correct"] and r["completion"].strip()]
        neg = [r["completion"] for r in same if not r["correct"] and r["completion"].strip()]
        pool = Pool(qid, prompt, has_reference=solution is not None)
        for texts, out in ((pos, pool.positives), (neg, pool.negatives)):
            kept, exact, near = dedup(texts, threshold)
            out.extend(texts[i] for i in kept)
            stats["exact_duplicates"] += exact
            stats["near_duplicates"] += near
        pools.append(pool)
    return pools


def new_stats(kind: str) -> dict:
    return {"kind": kind, "questions": 0, "rows": 0, "rows_other_prompt": 0,
            "exact_duplicates": 0, "near_duplicates": 0, "skipped": Counter(), "per_question": Counter()}
