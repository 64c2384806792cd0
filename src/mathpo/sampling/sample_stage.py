"""The sample stage: records -> one JSONL row per (question, sample), resumable.

`mathpo sample --model M --dataset D --out DIR` calls `sample_records`. Rows:
`id, sample, question, gold, prompt, completion, tokens, finish` plus the generation settings
(`model, template, n, temperature, top_p, max_new_tokens, seed, calculator, stop`) and `solution`
when the record has one. All n samples of a question go into the same append, so a killed run re-run
with the same command skips finished questions and loses or duplicates nothing; a re-run with other
settings (a row's, or the prompt a question already there renders to now) is refused. Backends that
stream (`generate_stream`: the hf backend) get all questions at once and rows are appended as
questions finish (every `flush_seconds`); once every question is done the file is rewritten
(atomically) in question order. Other backends get `chunk` questions per call.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import prompts
from ..errors import UserError
from ..progress import bar
from ..records import JsonlAppender, read_jsonl, write_jsonl
from . import Backend, SamplingParams

SETTINGS = ("model", "template", "n", "temperature", "top_p", "max_new_tokens", "seed", "calculator")


def _settings(model: str, template: str, params: SamplingParams) -> dict:
    p = params.as_dict()
    return {"model": model, "template": template, **{k: p[k] for k in SETTINGS[2:]}}


def _check_settings(out_path, row: dict, settings: dict) -> None:
    """UserError naming the first setting a row already in the file was made with otherwise."""
    for k, v in settings.items():
        if k == "stop" and k not in row:
            continue  # rows written before stop strings were recorded: nothing to compare
        if row.get(k) != v:
            raise UserError(f"{out_path} holds samples made with other settings ({k} {row.get(k)!r} there, "
                            f"{v!r} now); pick another --out or delete it")


def sample_records(records: list[dict], backend: Backend, tokenizer, params: SamplingParams,
                   out_path: str | Path, model_name: str, template: str = prompts.DEFAULT,
                   fewshot: list[dict] = (), chunk: int = 64, prefix_field: str | None = None,
                   flush_seconds: float = 5.0) -> dict:
    """Sample `params.n` completions per record into out_path (appending, resumable).

    `prefix_field`: a record field holding a partial answer to continue (prefix sampling).
    Returns stats: rows written now, questions skipped as already done, tokens, seconds.
    """
    settings = _settings(model_name, template, params)
    stop = tuple(params.stop) or prompts.get(template).stop
    params = SamplingParams(**{**params.as_dict(), "stop": stop})

    def render(rec: dict) -> str:
        return prompts.render(tokenizer, rec["question"], template,
                              prefix=rec.get(prefix_field, "") if prefix_field else "", fewshot=fewshot)

    out = JsonlAppender(out_path)
    done: dict[str, int] = {}
    first: dict[str, dict] = {}  # a row per question already there, for the prompt check
    for row in out.rows():
        _check_settings(out_path, row, {**settings, "stop": list(stop)})
        done[row["id"]] = done.get(row["id"], 0) + 1
        first.setdefault(row["id"], row)
    # settings outside the rows (template text, few-shot examples, chat template) show in the prompt:
    # one question's suffices, as they shape every prompt alike
    again = next((r for r in records if r["id"] in first), None)
    if again is not None and first[again["id"]].get("prompt") != render(again):
        raise UserError(f"{out_path} holds samples made with other settings (the prompt of question {again['id']} "
                        "differs: other few-shot examples, template or chat template); pick another --out or "
                        "delete it")
    todo = [r for r in records if done.get(r["id"], 0) < params.n]
    partial = [r["id"] for r in todo if r["id"] in done]
    if partial:  # cannot happen with whole-question appends; refuse rather than duplicate
        raise UserError(f"{out_path}: question {partial[0]} is partly sampled; delete the file to restart")
    t0, tokens, written = time.time(), 0, 0

    def rows_for(rec: dict, prompt: str, comps) -> list[dict]:
        nonlocal tokens
        rows = []
        for k, c in enumerate(comps):
            row = {"id": rec["id"], "sample": k, "question": rec["question"], "gold": rec["gold"],
                   "prompt": prompt, "completion": c.text, "tokens": c.tokens, "finish": c.finish, **settings,
                   "stop": list(stop)}
            if rec.get("solution") is not None:
                row["solution"] = rec["solution"]
            if prefix_field:
                row["prefix"] = rec.get(prefix_field, "")
            rows.append(row)
            tokens += c.tokens
        return rows

    stream = getattr(backend, "generate_stream", None)
    with bar(len(todo), "sampling", "q") as pbar:
        if stream is not None and todo:
            texts = [render(r) for r in todo]
            pending, last = [], time.time()
            for i, comps in stream(texts, params):
                pending += rows_for(todo[i], texts[i], comps)
                pbar.update(1)
                if time.time() - last >= flush_seconds:
                    out.append(pending)
                    written, pending, last = written + len(pending), [], time.time()
            out.append(pending)
            written += len(pending)
        else:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                texts = [render(r) for r in part]
                results = backend.generate(texts, params, progress=pbar.update)
                rows = [row for rec, prompt, comps in zip(part, texts, results) for row in rows_for(rec, prompt, comps)]
                out.append(rows)
                written += len(rows)
    if written or done:  # also when a kill cut the last run's final rewrite short (it rewrites only if unsorted)
        _sort_by_question(Path(out_path), records)
    secs = time.time() - t0
    return {"rows_written": written, "questions_skipped": len(records) - len(todo), "tokens": tokens,
            "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs, 1) if secs > 0 else None,
            "output": str(out_path)}


def _sort_by_question(path: Path, records: list[dict]) -> None:
    """Rewrite the finished file in question order (rows of other questions keep their place at the end)."""
    rows = read_jsonl(path)
    rank = {r["id"]: i for i, r in enumerate(records)}
    order = sorted(range(len(rows)), key=lambda j: (rank.get(rows[j]["id"], len(rank)), j))
    if order != list(range(len(rows))):
        write_jsonl(path, [rows[j] for j in order])
