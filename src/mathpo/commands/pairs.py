"""`mathpo pairs --kind dpo|rft|step --input GRADED.jsonl [--input MORE.jsonl] --output OUT.jsonl`:
preference pairs (DPO-ST), RFT sets, or Step-DPO step pairs (`--model M`) from graded samples.
Writes OUT.jsonl atomically and OUT.summary.json beside it, and prints the summary. `step` saves each
finished group of questions to OUT.parts.jsonl first: re-running a killed run continues from there.
"""

from __future__ import annotations

from collections import Counter

from .. import models, prompts
from ..errors import UserError
from ..pairs import KINDS, dpo, rft, steps
from ..pairs.split import MODES
from ..pairs.summary import format_summary, summary_path
from ..progress import bar
from ..records import read_jsonl, write_json, write_jsonl
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "pairs", "build DPO pairs, RFT sets or Step-DPO pairs from graded samples", run)
    opts.add("--kind", choices=list(KINDS), default=None, help="dpo (whole solutions), rft (SFT set), step (Step-DPO)")
    opts.add("--input", action="append", default=[], help="graded JSONL (repeatable: samples of several rounds are pooled)")
    opts.add("--output", default=None, help="pairs JSONL; the summary goes to OUT.summary.json")
    opts.add("--template", default="auto", help="prompt template; auto = the rows' `template` field")
    opts.add("--model", default=None, help="step: the model that rolls out and rectifies (default: the rows' `model`); "
             "dpo/rft: tokenizer for rows without a prompt")
    opts.add("--threshold", type=float, default=0.7, help="near-duplicate if Jaccard similarity of token sets is above")
    opts.add("--k", type=int, default=3, help="dpo: pairs per question at most")
    opts.add("--cap-percentile", type=float, default=90, help="rft: cap solutions per question at this percentile")
    opts.add("--locator", default="rollout", choices=["rollout", "judge"], help="step: how the first wrong step is found")
    opts.add("--rollouts", type=int, default=8, help="step: continuations per prefix to estimate its success rate")
    opts.add("--chunk", type=int, default=4, help="step: rollouts drawn at a time (stop at the first success)")
    opts.add("--search", default="binary", choices=["binary", "linear"], help="step: how prefixes are searched")
    opts.add("--margin", type=float, default=None, help="step: also an error where the success rate drops by more "
             "than this (needs --search linear)")
    opts.add("--rectify-n", type=int, default=8, help="step: continuations sampled to find a correct step when "
             "the rollouts found none")
    opts.add("--pairs-per-error", type=int, default=1, help="step: chosen steps per located error at most")
    opts.add("--probe-unsolved", action="store_true", default=False,
             help="step: roll out questions with no correct sample from the bare prompt instead of skipping them")
    opts.add("--split", default="auto", choices=list(MODES), help="step: how solutions are cut into steps")
    opts.add("--max-per-question", type=int, default=None, help="step: wrong solutions per question at most")
    opts.add("--temperature", type=float, default=0.7, help="step: rollout temperature")
    opts.add("--top-p", type=float, default=0.95, help="step: rollout nucleus sampling")
    opts.add("--max-new-tokens", type=int, default=256, help="step: tokens per rollout at most")
    opts.add("--seed", type=int, default=0, help="step: rollout seed")
    opts.add("--calculator", action="store_true", default=False,
             help="step: force <<expr=result>> annotations in rollouts to the calculator's result")
    opts.add("--questions-per-part", type=int, default=32,
             help="step: questions per unit of work saved to OUT.parts.jsonl (a killed run resumes there)")
    opts.add("--dataset-name", default=None, help="step: the `dataset` column (default: the rows' `dataset` or unknown)")
    opts.add("--judge-url", default=None, help="judge: OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    opts.add("--judge-model", default=None, help="judge: model name sent to the endpoint")
    opts.add("--judge-key-env", default="OPENAI_API_KEY", help="judge: environment variable holding the API key")
    opts.add("--dtype", default="auto", help="step: model dtype")
    opts.add("--device", default="auto", help="step: model device")
    opts.add("--cache-dir", default=None, help="where converted embedded models live")
    opts.add("--backend", default="hf", choices=["hf", "vllm"], help="step: sampling backend")
    opts.add("--batch-size", type=int, default=32, help="step: sequences generated together (hf backend)")


def _uniform(rows: list[dict], key: str) -> str | None:
    values = Counter(r.get(key) for r in rows if r.get(key))
    if len(values) > 1:
        raise UserError(f"input rows come from several {key}s ({', '.join(map(str, values))}); pass --{key}")
    return next(iter(values), None)


def run(args) -> int:
    cfg = args.options.resolve(args)
    if not cfg["kind"]:
        raise UserError("--kind is required (dpo, rft, step)")
    if not cfg["input"] or not cfg["output"]:
        raise UserError("--input and --output are required")
    rows = [r for path in cfg["input"] for r in read_jsonl(path, required=("id", "question", "completion"))]
    if not rows:
        raise UserError(f"{', '.join(cfg['input'])}: no rows")
    if any("correct" not in r for r in rows):
        raise UserError("input rows are not graded (no `correct` field): run `mathpo grade` first")
    template = cfg["template"] if cfg["template"] != "auto" else (_uniform(rows, "template") or prompts.DEFAULT)
    prompts.get(template)
    model = cfg["model"] or _uniform(rows, "model")
    kind = cfg["kind"]
    if kind in ("dpo", "rft"):
        tok = None
        if any(not r.get("prompt") for r in rows):
            if not model:
                raise UserError("some rows carry no prompt: pass --model to render them")
            tok = models.load_tokenizer(model, cfg["cache_dir"])
        if kind == "dpo":
            out, stats = dpo.build(rows, tok, template, k=cfg["k"], threshold=cfg["threshold"])
        else:
            out, stats = rft.build(rows, tok, template, threshold=cfg["threshold"], cap_percentile=cfg["cap_percentile"])
    else:
        out, stats = _step(rows, cfg, template, model)
    stats["inputs"] = list(cfg["input"])
    write_jsonl(cfg["output"], out)
    write_json(summary_path(cfg["output"]), stats)
    if kind == "step":
        steps.parts_path(cfg["output"]).unlink(missing_ok=True)  # the output holds it all now
    print(format_summary(stats))
    print(f"wrote {cfg['output']}, {summary_path(cfg['output'])}")
    return 0


def _step(rows: list[dict], cfg: dict, template: str, model: str | None):
    if not model:
        raise UserError("--kind step needs --model (the model that samples rollouts and fixes)")
    if (cfg["rollouts"] < 1 or cfg["chunk"] < 1 or cfg["rectify_n"] < 0 or cfg["pairs_per_error"] < 1
            or cfg["questions_per_part"] < 1):
        raise UserError("--rollouts, --chunk, --pairs-per-error, --questions-per-part must be >= 1 "
                        "and --rectify-n >= 0")
    if cfg["margin"] is not None and cfg["search"] != "linear":
        raise UserError("--margin compares neighbouring steps: use it with --search linear")
    judge = None
    if cfg["locator"] == "judge":
        import os

        from ..pairs.judge import JudgeLocator

        if not cfg["judge_url"] or not cfg["judge_model"]:
            raise UserError("--locator judge needs --judge-url and --judge-model")
        judge = JudgeLocator(cfg["judge_url"], cfg["judge_model"], os.environ.get(cfg["judge_key_env"]))
    loaded = models.load(model, cfg["dtype"], cfg["device"], cfg["cache_dir"])
    backend = common.make_backend(cfg, loaded, template)
    wrong = len({(r["id"], r["completion"].strip()) for r in rows if not r["correct"]})
    with bar(wrong, "locating errors", "sol") as pbar:
        return steps.build_in_parts(rows, steps.parts_path(cfg["output"]), backend, loaded.tokenizer, template,
                           questions_per_part=cfg["questions_per_part"], locator=cfg["locator"], judge=judge,
                           rollouts=cfg["rollouts"], chunk=cfg["chunk"], search=cfg["search"], margin=cfg["margin"],
                           rectify_n=cfg["rectify_n"], pairs_per_error=cfg["pairs_per_error"], split_mode=cfg["split"],
                           temperature=cfg["temperature"], top_p=cfg["top_p"], max_new_tokens=cfg["max_new_tokens"],
                           seed=cfg["seed"], max_per_question=cfg["max_per_question"],
                           probe_unsolved=bool(cfg["probe_unsolved"]), calculator=bool(cfg["calculator"]),
                           dataset=cfg["dataset_name"],
                           progress=pbar.update)
