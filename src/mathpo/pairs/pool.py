"""Pool graded samples per question for `mathpo pairs --kind dpo|rft`: the question's prompt,
its unique correct solutions (the reference solution first, written in the answer format the
question's samples use) and its unique wrong ones, near-duplicates removed. A row whose final
answer is cut off (grading.truncation) is never a positive, whatever its `correct` says (rows
graded elsewhere, or before mathpo checked this), and is counted in `truncated_positives`.

Answer format of the reference: the template named by the question's rows (`template`, as
`mathpo sample` writes it), else the format their completions use (`#### N` or `\boxed{}`, by
majority; over the whole file when the question's samples have no marker), else `template`'s.

Prompt rule: a question's prompt is the `prompt` field most of its rows share (the exact text
that was sampled, so training sees the sampled tokens); rows without one get
`prompts.render(tokenizer, question, template)`. Rows sampled under another prompt (another
template or few-shot set) cannot share a pair with the others and are set aside and counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace

from .. import prompts
from ..errors import UserError
from ..grading import metrics
from ..grading.extract import after_hashes, cut_run_on, last_boxed
from ..grading.truncation import cut_off
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


def detect_format(completions: list[str]) -> str | None:
    """`boxed` or `hashes`: the final-answer marker most of the completions use; None if neither
    wins (no markers, or a tie)."""
    votes = Counter()
    for c in completions:
        text = cut_run_on(c or "")
        boxed, hashes = last_boxed(text) is not None, after_hashes(text) is not None
        if boxed != hashes:
            votes["boxed" if boxed else "hashes"] += 1
    if votes["boxed"] == votes["hashes"]:
        return None
    return "boxed" if votes["boxed"] > votes["hashes"] else "hashes"


def reference_template(qrows: list[dict], template: str, file_format: str | None) -> prompts.Template:
    """The template a question's reference solution is written in (see the module docstring)."""
    named = Counter(r["template"] for r in qrows if r.get("template") in prompts.TEMPLATES)
    if named:
        return prompts.get(named.most_common(1)[0][0])
    t = prompts.get(template)
    fmt = detect_format([str(r.get("completion") or "") for r in qrows]) or file_format
    return replace(t, answer_format=fmt) if fmt else t


def whole(row: dict) -> bool:
    """False when the row's final answer is cut off (its `truncated`, or checked here)."""
    if row.get("truncated"):
        return False
    return cut_off(str(row.get("completion") or ""), row.get("pred"), row.get("finish")) is None


def build_pools(rows: list[dict], tokenizer, template: str, threshold: float,
                stats: dict) -> list[Pool]:
    """One Pool per question; counts dropped duplicates and set-aside rows into `stats`."""
    pools = []
    file_format = detect_format([str(r.get("completion") or "") for r in rows])
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
        ref = reference_template(qrows, template, file_format) if solution else None
        pos = [reference_completion(solution, str(first.get("gold", "")), ref)] if solution else []
        correct = [r for r in same if r["correct"] and r["completion"].strip()]
        kept = [r for r in correct if whole(r)]
        stats["truncated_positives"] += len(correct) - len(kept)
        pos += [r["completion"] for r in kept]
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
    return {"kind": kind, "questions": 0, "rows": 0, "rows_other_prompt": 0, "truncated_positives": 0,
            "exact_duplicates": 0, "near_duplicates": 0, "skipped": Counter(), "per_question": Counter()}
