"""The `st` recipe of `mathpo loop` (recipe: [st], or an arm of `arms:`): conventional
self-training, the baseline DPO-ST is measured against (REFERENCE.md section 1): sample from the
current model, keep the correct solutions (an RFT set), SFT on them. No preference step.

Equal budget with `dpo-st`: an iteration of DPO-ST samples `sample.n` solutions per question
from the current model and `rft.n` from its DPO model; `st` samples `sample.n + rft.n` per
question from the current model, once, with the `sample` section's temperature and length. The
RFT set and the SFT use the same sections as DPO-ST's (`rft.threshold`, `rft.cap_percentile`,
`rft.pool`: true or all = pooled over the arm's iterations; `sft.restart`, `sft.overrides`).

Stages: ITER/st_sample, ITER/st_rft, ITER/st_sft, ITER/eval_st (eval point `st`). The RFT -> SFT
tail (`rft_sft`) is DPO-ST's too (ITER/rft, ITER/sft, ITER/eval_sft).
"""

from __future__ import annotations

from .curriculum import curriculum_order, curriculum_train
from .loop import (
    Run,
    _iter,
    _pooled,
    eval_stage,
    pairs_stage,
    sample_stage,
    train_stage,
)
from .records import read_jsonl


def budget(cfg: dict) -> int:
    """Solutions sampled per question per iteration: DPO-ST's two sampling stages together."""
    return cfg["sample"]["n"] + cfg["rft"]["n"]


def st(run: Run, k: int, current: str, base: str, warm: str, questions: list[dict], tokenizer,
       where=_iter, final: bool = False) -> str:
    cfg, it = run.cfg, where(k)
    section = {**cfg["sample"], "n": budget(cfg)}
    run.stage(f"{it}/st_sample", lambda d: sample_stage(cfg, run.held, current, questions, section, cfg["template"],
                                                        cfg["seed"] + k, d))
    graded = read_jsonl(run.root / it / "st_sample" / "graded.jsonl")
    pooled = _pooled(run, k, "st_sample", where) if cfg["rft"]["pool"] else graded
    order = curriculum_order(cfg, graded, pooled)
    start = {"base": base, "warmup": warm, "continue": current}[cfg["sft"]["restart"]]
    return rft_sft(run, it, pooled, tokenizer, order, start, ("st_rft", "st_sft", "st"), final)


def rft_sft(run: Run, it: str, pooled: list[dict], tokenizer, order: dict | None, start: str,
            names: tuple[str, str, str], final: bool) -> str:
    """RFT set from `pooled` (stage IT/names[0]), SFT on it from `start` (IT/names[1]), evaluated
    at point names[2] (IT/eval_<point>) when eval.after has it or `final`; returns the SFT model."""
    cfg, (rft, sft, point) = run.cfg, names
    run.stage(f"{it}/{rft}", lambda d: pairs_stage("rft", pooled, tokenizer, cfg["template"],
                                                   {"threshold": cfg["rft"]["threshold"],
                                                    "cap_percentile": cfg["rft"]["cap_percentile"]}, d, order))
    rows = read_jsonl(run.root / it / rft / "rft.jsonl")
    model = run.stage(f"{it}/{sft}", lambda d: train_stage(cfg, run.held, "sft", start, rows, cfg["sft"], d,
                                                           extra=curriculum_train(order)))["model"]
    if point in cfg["eval"]["after"] or final:
        run.stage(f"{it}/eval_{point}", lambda d: eval_stage(cfg, run.held, model, d, run.root))
    return model
