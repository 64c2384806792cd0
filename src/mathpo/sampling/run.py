"""The sample stage: records -> one JSONL row per (question, sample), resumable.

`mathpo sample --model M --dataset D --out DIR` calls `sample_records`. Rows:
`id, sample, question, gold, prompt, completion, tokens, finish` plus the generation settings
(`model, template, n, temperature, top_p, max_new_tokens, seed, calculator`) and `solution` when
the record has one. Questions are written a chunk at a time, all n samples of a question in the
same append, so a killed run re-run with the same command skips finished questions and loses or
duplicates nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import prompts
from ..errors import UserError
from ..progress import bar
from ..records import JsonlAppender
from . import Backend, SamplingParams

SETTINGS = ("model", "template", "n", "temperature", "top_p", "max_new_tokens", "seed", "calculator")


def _settings(model: str, template: str, params: SamplingParams) -> dict:
    p = params.as_dict()
    return {"model": model, "template": template, **{k: p[k] for k in SETTINGS[2:]}}


def sample_records(records: list[dict], backend: Backend, tokenizer, params: SamplingParams,
                   out_path: str | Path, model_name: str, template: str = prompts.DEFAULT,
                   fewshot: list[dict] = (), chunk: int = 64, prefix_field: str | None = None) -> dict:
    """Sample `params.n` completions per record into out_path (appending, resumable).

    `prefix_field`: a record field holding a partial answer to continue (prefix sampling).
    Returns stats: rows written now, questions skipped as already done, tokens, seconds.
    """
    settings = _settings(model_name, template, params)
    out = JsonlAppender(out_path)
    done: dict[str, int] = {}
    for row in out.rows():
        if any(row.get(k) != v for k, v in settings.items()):
            raise UserError(f"{out_path} holds samples made with other settings; pick another --out or delete it")
        done[row["id"]] = done.get(row["id"], 0) + 1
    todo = [r for r in records if done.get(r["id"], 0) < params.n]
    partial = [r["id"] for r in todo if r["id"] in done]
    if partial:  # cannot happen with whole-question appends; refuse rather than duplicate
        raise UserError(f"{out_path}: question {partial[0]} is partly sampled; delete the file to restart")
    stop = tuple(params.stop) or prompts.get(template).stop
    params = SamplingParams(**{**params.as_dict(), "stop": stop})
    t0, tokens, written = time.time(), 0, 0
    with bar(len(todo), "sampling", "q") as pbar:
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            texts = [prompts.render(tokenizer, r["question"], template,
                                    prefix=r.get(prefix_field, "") if prefix_field else "", fewshot=fewshot)
                     for r in part]
            results = backend.generate(texts, params, progress=pbar.update)
            rows = []
            for rec, prompt, comps in zip(part, texts, results):
                for k, c in enumerate(comps):
                    row = {"id": rec["id"], "sample": k, "question": rec["question"], "gold": rec["gold"],
                           "prompt": prompt, "completion": c.text, "tokens": c.tokens, "finish": c.finish,
                           **settings}
                    if rec.get("solution") is not None:
                        row["solution"] = rec["solution"]
                    if prefix_field:
                        row["prefix"] = rec.get(prefix_field, "")
                    rows.append(row)
                    tokens += c.tokens
            out.append(rows)
            written += len(rows)
    secs = time.time() - t0
    return {"rows_written": written, "questions_skipped": len(records) - len(todo), "tokens": tokens,
            "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs, 1) if secs > 0 else None,
            "output": str(out_path)}
