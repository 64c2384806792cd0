"""The arms section of a loop report (`arms:` runs, mathpo.loop_arms): RUN/report.md's arms table,
RUN/arms.png and RUN/arms_comparisons.json, built from RUN/arms.json and the final evaluations.

- accuracy of every arm's final model (and the warm-up model) per test set, with Wilson 95%
  intervals, on the same questions;
- the sampling budget each arm spent: solutions sampled per question per iteration (the equal-budget
  rule: `st` samples sample.n + rft.n, DPO-ST's two sampling stages together) and Step-DPO rollouts;
- paired differences between arms (and each arm against the warm-up model): mean difference over
  the shared questions with a paired 95% interval, questions gained / lost, exact McNemar p.
Seed-to-seed spread over runs of one arms config with different seeds, with each evaluated stage
(Step-DPO's, for one) against the evaluated model it trained from, per seed, pooled over the
questions, and across seeds (a t interval with the seed as the unit):
    python -m mathpo.report_arms runs/ablation runs/ablation-seed1     # prints it, writes RUN1/seeds.md
"""

from __future__ import annotations

import sys
from itertools import combinations
from pathlib import Path

from .grading.metrics import ci95
from .records import read_json, write_json
from .report import change, correctness, label, paired, stage_starts, stages

WARM = ("warm-up", "iter_0/eval_warmup_sft")
# sampling stages of each recipe (solutions drawn from a model, per question)
SAMPLING = {"dpo-st": ("sample", "sample_dpo"), "st": ("st_sample",), "step-dpo": ("step_sample",)}


def budget(root: Path, arm: dict) -> tuple[float, int]:
    """(solutions sampled per question per iteration, Step-DPO rollouts in all) of one arm."""
    per_iter: dict[int, float] = {}
    rollouts = 0
    for k, recipe, folder in arm["steps"]:
        for stage in SAMPLING[recipe]:
            path = root / folder / stage / "DONE.json"
            if path.is_file():
                st = read_json(path)
                per_iter[k] = per_iter.get(k, 0.0) + st["samples"] / max(1, st["questions"])
        path = root / folder / "step_pairs" / "DONE.json"
        if recipe == "step-dpo" and path.is_file():
            rollouts += read_json(path).get("pairs", {}).get("rollouts_total", 0)
    return (sum(per_iter.values()) / len(per_iter) if per_iter else 0.0), rollouts


def _points(root: Path, arms: dict) -> list[tuple[str, str]]:
    points = [WARM] if (root / WARM[1] / "DONE.json").is_file() else []
    return points + [(name, a["final_eval"]) for name, a in arms.items() if a.get("final_eval")]


def _scores(root: Path):
    """(arms.json, evaluation points, test sets, {(point, test): {question id: correctness}})."""
    arms = read_json(root / "arms.json")
    points = _points(root, arms)
    tests = sorted(p.stem for p in (root / "data" / "test").glob("*.jsonl"))
    scores = {(name, t): correctness(root, rel, t) for name, rel in points for t in tests
              if (root / rel / t / "graded.jsonl").is_file()}
    return arms, points, tests, scores


def arms_table(root: str | Path) -> tuple[str, list[dict]]:
    """Markdown (accuracy table + paired differences) and the comparisons as dicts; ("", []) for
    a run without arms."""
    root = Path(root)
    if not (root / "arms.json").is_file():
        return "", []
    arms, points, tests, scores = _scores(root)
    lines = ["| arm | recipes | test set | n | accuracy | 95% interval (Wilson) | samples/question/iteration "
             "| step rollouts |", "|---|---|---|---|---|---|---|---|"]
    for name, _rel in points:
        recipes = " + ".join(arms[name]["recipes"]) if name in arms else "(reference)"
        spent, rollouts = budget(root, arms[name]) if name in arms else (0.0, 0)
        for t in tests:
            s = scores.get((name, t))
            if not s:
                continue
            acc, (lo, hi) = sum(s.values()) / len(s), ci95(list(s.values()))
            spend = [f"{spent:.1f}", str(rollouts)] if name in arms else ["", ""]
            lines.append("| " + " | ".join([name, recipes, t, str(len(s)), f"{100 * acc:.1f}%",
                                            f"[{100 * lo:.1f}, {100 * hi:.1f}]", *spend]) + " |")
    comps = []
    diff_lines = ["| comparison | test set | n | difference [95% interval] | gained/lost | McNemar p |",
                  "|---|---|---|---|---|---|"]
    for (a, _), (b, _) in combinations(points, 2):
        for t in tests:
            if (a, t) in scores and (b, t) in scores:
                c = paired(scores[(a, t)], scores[(b, t)])
                comps.append({"a": a, "b": b, "test": t, **c})
                diff_lines.append(f"| {b} - {a} | {t} | {c['n']} | {change(c)} | {c['gained']}/{c['lost']} "
                                  f"| {c['mcnemar_p']:.3g} |")
    text = ("## Arms\n\nEvery arm starts from the same warm-up model and is evaluated on the same questions. "
            "Equal budget: `st` samples sample.n + rft.n solutions per question per iteration, as many as "
            "DPO-ST's two sampling stages together (column `samples/question/iteration`, measured from the "
            "stages); Step-DPO adds its own samples and rollouts.\n\n" + "\n".join(lines)
            + "\n\nPaired differences (b - a) on the questions both answered:\n\n" + "\n".join(diff_lines) + "\n")
    return text, comps


def plot_arms(root: Path, plt) -> str | None:
    """Grouped bars: accuracy per arm and test set with Wilson 95% intervals (RUN/arms.png)."""
    if not (root / "arms.json").is_file():
        return None
    points = _points(root, read_json(root / "arms.json"))
    tests = sorted(p.stem for p in (root / "data" / "test").glob("*.jsonl"))
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(points) * max(1, len(tests)) / 2 + 2), 3.8))
    width = 0.8 / max(1, len(tests))
    for j, t in enumerate(tests):
        xs, acc, err_lo, err_hi = [], [], [], []
        for i, (_, rel) in enumerate(points):
            if (root / rel / t / "graded.jsonl").is_file():
                v = list(correctness(root, rel, t).values())
                m, (lo, hi) = sum(v) / len(v), ci95(v)
                xs.append(i + (j - (len(tests) - 1) / 2) * width)
                acc.append(100 * m)
                err_lo.append(100 * (m - lo))
                err_hi.append(100 * (hi - m))
        ax.bar(xs, acc, width, yerr=[err_lo, err_hi], capsize=3, label=t)
    ax.set_xticks(range(len(points)), [name for name, _ in points])
    ax.set_ylabel("accuracy (%)")
    ax.set_title("final model per arm (95% Wilson interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "arms.png", dpi=110)
    plt.close(fig)
    return "arms.png"


def write_arms(root: Path, plt) -> tuple[str, list[str]]:
    """The arms section's markdown and its plots (written); nothing for a run without arms."""
    text, comps = arms_table(root)
    if not text:
        return "", []
    write_json(root / "arms_comparisons.json", comps)
    plot = plot_arms(root, plt)
    return text, [plot] if plot else []


# Student's t, 0.975 quantile, by degrees of freedom (standard table values)
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def across_seeds(diffs: list[float]) -> dict | None:
    """Mean of the per-seed differences with a t interval over the seeds (df = seeds - 1): the seed is
    the unit, so a whole seed's training luck counts as noise. The pooled interval does not hold that:
    it treats the seeds' runs as fixed and varies only the questions. The seeds share their test
    questions, so this one is about another seed's run on these questions."""
    k = len(diffs)
    if k < 2:
        return None
    mean = sum(diffs) / k
    sd = (sum((d - mean) ** 2 for d in diffs) / (k - 1)) ** 0.5
    t = T975[k - 2] if k - 1 <= len(T975) else 1.96 + (1.96 ** 3 + 1.96) / (4 * (k - 1))
    half = t * sd / k ** 0.5
    return {"diff": mean, "ci95": [mean - half, mean + half], "seeds": k}


def _across(per_seed: list[dict]) -> str:
    """`across_seeds` of the seeds' `paired` results, formatted as `change`."""
    c = across_seeds([p["diff"] for p in per_seed])
    return change(c) if c else ""


def _pooled(both: list[tuple[dict, dict]]) -> str:
    """The paired difference with each question's correctness averaged over the seeds (the seeds
    are replicates on the same questions): its interval holds the question-to-question noise of
    these runs, not how much another seed's run would move (that is `across_seeds`)."""
    if len(both) < 2:
        return ""
    ids = set.intersection(*(set(a) & set(b) for a, b in both))
    mean = [{q: sum(x[q] for x in xs) / len(xs) for q in ids} for xs in zip(*both)]
    return change(paired(mean[0], mean[1]))


def seeds_table(roots: list[str | Path]) -> str:
    """Markdown: every arm's accuracy per test set in each run (one seed each) with the spread
    (max - min), and each paired difference between arms per run and with the seeds pooled."""
    runs = [(read_json(Path(r) / "config.json").get("seed"), _scores(Path(r))) for r in roots]
    names = list(dict.fromkeys(name for _, (_, points, _, _) in runs for name, _ in points))
    tests = sorted({t for _, (_, _, ts, _) in runs for t in ts})
    head = " | ".join(f"seed {seed}" for seed, _ in runs)
    lines = [f"| arm | test set | {head} | spread |", "|---|---|" + "---|" * (len(runs) + 1)]
    for name in names:
        for t in tests:
            accs = [sum(v.values()) / len(v) if (v := sc.get((name, t))) else None for _, (_, _, _, sc) in runs]
            got = [a for a in accs if a is not None]
            if got:
                cells = [f"{100 * a:.1f}%" if a is not None else "" for a in accs]
                lines.append(f"| {name} | {t} | {' | '.join(cells)} | {100 * (max(got) - min(got)):.1f} |")
    diffs = [f"| comparison | test set | {head} | seeds pooled | across seeds (t) |",
             "|---|---|" + "---|" * (len(runs) + 2)]
    for a, b in combinations(names, 2):
        for t in tests:
            cells, both, per_seed = [], [], []
            for _, (_, _, _, sc) in runs:
                if (a, t) in sc and (b, t) in sc:
                    per_seed.append(paired(sc[(a, t)], sc[(b, t)]))
                    cells.append(change(per_seed[-1]))
                    both.append((sc[(a, t)], sc[(b, t)]))
                else:
                    cells.append("")
            if any(cells):
                diffs.append(f"| {b} - {a} | {t} | {' | '.join(cells)} | {_pooled(both)} | {_across(per_seed)} |")
    return ("## Arms across seeds\n\nAccuracy (%) of each arm's final model per seed; spread = max - min.\n\n"
            + "\n".join(lines) + "\n\nPaired differences (b - a) [95% interval] per seed; pooled (each question's "
            "correctness averaged over the seeds; the interval varies the questions, the seeds' runs held fixed); "
            "and across seeds (the mean of the seeds' differences, a t interval over the seeds: what another "
            "seed's run may give on these questions):\n\n"
            + "\n".join(diffs) + "\n" + _stage_table([Path(r) for r in roots], head, len(runs)))


def _stage_table(roots: list[Path], head: str, width: int) -> str:
    """Markdown: what each evaluated stage added over the evaluated model it started from (the
    report's stage-by-stage table, mathpo.report.stage_starts), per seed and pooled."""
    per_run = []
    for root in roots:
        evals = [(s, st) for s, st in stages(root) if "results" in st]
        per_run.append({(stage, start): {t: (correctness(root, start, t), correctness(root, stage, t)) for t in tests}
                        for stage, start, tests in stage_starts(root, evals)})
    keys = list(dict.fromkeys(k for run in per_run for k in run))
    if not keys:
        return ""
    lines = [f"| stage | trained from | test set | {head} | seeds pooled | across seeds (t) |",
             "|---|---|---|" + "---|" * (width + 2)]
    for key in keys:
        for t in sorted({t for run in per_run for t in run.get(key, {})}):
            both = [run[key][t] for run in per_run if t in run.get(key, {})]
            per_seed = [paired(*run[key][t]) if t in run.get(key, {}) else None for run in per_run]
            cells = [change(p) if p else "" for p in per_seed]
            every = len(both) == len(per_run)  # pooled and across only where every seed has the stage
            lines.append(f"| {label(key[0])} | {label(key[1])} | {t} | {' | '.join(cells)} | "
                         f"{_pooled(both) if every else ''} | {_across(per_seed) if every else ''} |")
    return ("\nStage by stage: each evaluated model against the evaluated model it was trained from "
            "(b - a), per seed, pooled and across seeds:\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    from .records import atomic_write_text

    text = seeds_table(sys.argv[1:])
    atomic_write_text(Path(sys.argv[1]) / "seeds.md", text)
    print(text)
