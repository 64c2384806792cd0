"""Several arms compared in one `mathpo loop` run (`arms:` in the config), e.g.

    arms: {st: [st], dpo-st: [dpo-st], full: [dpo-st, step-dpo]}

Every arm starts from the same warm-up model (iter_0, trained once) and runs its recipe list in
every iteration on the same training questions; every arm's last model is evaluated on the same
test sets (data/test), so the report can pair them question by question (mathpo.report_arms).

Stages that two arms share are run once. An arm is a sequence of steps (iteration, recipe); two
arms whose sequences agree up to a step have made that step from identical inputs (same model,
same questions, same settings and seeds), so it is one node, stored once, in the folder of the
first arm in config order that has it: ARM/iter_K/STAGE. With the arms above, `full` reads its
iteration-1 DPO-ST stages from dpo-st/iter_1/ and writes its Step-DPO stages to full/iter_1/.
A recipe's pooled samples come from the same arm's earlier iterations. RUN/arms.json records each
arm's steps, folders, final model and final evaluation.
"""

from __future__ import annotations

from pathlib import Path

from .loop import Run, _questions, apply_recipe
from .records import read_json, write_json


def plan(arms: dict[str, list[str]], iterations: int) -> dict[str, list[tuple[int, str, str]]]:
    """arm -> its steps [(k, recipe, folder)], folder = OWNER/iter_k where OWNER is the first arm
    whose steps begin with the same ones up to this step."""
    seqs = {arm: [(k, r) for k in range(1, iterations + 1) for r in recipes] for arm, recipes in arms.items()}
    out = {}
    for arm, seq in seqs.items():
        steps = []
        for i, (k, r) in enumerate(seq):
            owner = next(a for a, s in seqs.items() if s[:i + 1] == seq[:i + 1])
            steps.append((k, r, f"{owner}/iter_{k}"))
        out[arm] = steps
    return out


def final_eval(run: Run, folder: str, model: str) -> str | None:
    """The eval stage of `model` in `folder` (an arm's last step), from the run's own stage order."""
    for rel in reversed(run.order):
        if rel.startswith(folder + "/eval_") and (run.root / rel / "DONE.json").is_file():
            if read_json(run.root / rel / "DONE.json").get("model") == model:
                return rel
    return None


def run_arms(run: Run, base: str, warm: str, train: list[dict], tokenizer) -> dict[str, str]:
    """Run (or resume) every arm from the warm-up model `warm`; returns arm -> final model."""
    cfg = run.cfg
    plans = plan(cfg["arms"], cfg["iterations"])
    finals, record = {}, {}
    for arm, steps in plans.items():
        print(f"== arm {arm}: {' -> '.join(cfg['arms'][arm])} x {cfg['iterations']} iterations")
        folders = {(k, r): folder for k, r, folder in steps}
        current = warm
        for i, (k, r, _folder) in enumerate(steps):
            current = apply_recipe(run, r, k, current, base, warm, _questions(cfg, train, k), tokenizer,
                                   where=lambda j, r=r, folders=folders: folders[(j, r)], final=i == len(steps) - 1)
        finals[arm] = current
        last = steps[-1][2] if steps else "iter_0"
        record[arm] = {"recipes": cfg["arms"][arm], "steps": [list(s) for s in steps], "final_model": current,
                       "final_eval": final_eval(run, last, current) if steps else _warm_eval(run)}
    write_json(run.root / "arms.json", record)
    return finals


def _warm_eval(run: Run) -> str | None:
    rel = "iter_0/eval_warmup_sft"
    return rel if (Path(run.root) / rel / "DONE.json").is_file() else None
