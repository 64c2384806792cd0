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
from ..pairs.step_options import StepPairOptions
from ..pairs.summary import format_summary, summary_path
from ..progress import bar
from ..records import read_jsonl, write_json, write_jsonl
from ..sampling import BackendSettings, loads_weights
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(sub, "pairs", "build DPO pairs, RFT sets or Step-DPO pairs from graded samples",
                                      run)
    opts.add("--kind", choices=list(KINDS), default=None, help="dpo (whole solutions), rft (SFT set), step (Step-DPO)")
    opts.add("--input", action="append", default=[],
             help="graded JSONL (repeatable: samples of several rounds are pooled)")
    opts.add("--output", default=None, help="pairs JSONL; the summary goes to OUT.summary.json")
    opts.add("--template", default="auto", help="prompt template; auto = the rows' `template` field")
    opts.add("--model", default=None, help="step: the model that rolls out and rectifies (default: the rows' `model`); "
             "dpo/rft: tokenizer for rows without a prompt")
    opts.add("--threshold", type=float, default=0.7, help="near-duplicate if Jaccard similarity of token sets is above")
    opts.add("--k", type=int, default=3, help="dpo: pairs per question at most")
    opts.add("--cap-percentile", type=float, default=90, help="rft: cap solutions per question at this percentile")
    StepPairOptions.add_flags(opts)  # --locator, --rollouts, --rectify-n, --judge-url, ...
    opts.add("--dtype", default="auto", help="step: model dtype")
    opts.add("--device", default="auto", help="step: model device")
    opts.add("--cache-dir", default=None, help="where converted embedded models live")
    common.backend_options(opts)  # step: the rollouts' backend


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
            out, stats = rft.build(rows, tok, template, threshold=cfg["threshold"],
                                   cap_percentile=cfg["cap_percentile"])
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
    options = StepPairOptions.from_flags(cfg)  # checked (judge settings too) before the model loads
    BackendSettings.of(cfg).check()
    loaded = models.load(model, cfg["dtype"], cfg["device"], cfg["cache_dir"], weights=loads_weights(cfg["backend"]))
    backend = common.make_backend(cfg, loaded, template)
    wrong = len({(r["id"], r["completion"].strip()) for r in rows if not r["correct"]})
    with bar(wrong, "locating errors", "sol") as pbar:
        return options.build(rows, steps.parts_path(cfg["output"]), backend, loaded.tokenizer, template,
                             progress=pbar.update)
