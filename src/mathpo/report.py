"""The loop's report: `RUN/report.md` with PNG plots, written at the end of `mathpo loop`.

Reads only what the stages left in the run folder (their DONE.json, eval summaries and graded
rows, pair files, training metrics.jsonl), so it can be rebuilt any time:
    python -m mathpo.report runs/demo
Plots: accuracy per evaluation point and test set (greedy and maj@k, 95% intervals), pass@k
curves, pairs per iteration, DPO reward margins during training, seconds per stage (and a time
table with each stage's overheads: model load or conversion, backend start, sampling, grading,
training loop; `reused` where the previous stage's model served). The summary
table compares every evaluation point with the reference (the warm-up SFT model, else the base
model) on the same questions: paired difference with a 95% interval and an exact McNemar test.
A stage-by-stage table pairs each evaluated model with the evaluated model it trained from. With
`dpo-st` iterations it also compares the DPO model's samples with its start model's (`report_labels`).
"""

from __future__ import annotations

import sys
from math import comb, sqrt
from pathlib import Path

import yaml

from .grading.metrics import group, pass_at_k, pass_rates
from .records import atomic_write_text, read_json, read_jsonl

PAIR_FILES = {"pairs": ("dpo.jsonl", "DPO pairs"), "rft": ("rft.jsonl", "RFT rows"),
              "st_rft": ("rft.jsonl", "RFT rows"), "step_pairs": ("step.jsonl", "step pairs")}


def stages(root: Path) -> list[tuple[str, dict]]:
    """(stage, DONE stats) for every finished stage, in the run's own order (RUN/stages.json, written
    by the loop as it reaches each stage); finished stages it does not list (a run folder from an
    older mathpo) follow in the order they finished."""
    order = read_json(root / "stages.json") if (root / "stages.json").is_file() else []
    listed = [s for s in order if (root / s / "DONE.json").is_file()]
    rest = sorted((p for p in root.glob("**/DONE.json") if str(p.parent.relative_to(root)) not in set(listed)),
                  key=lambda p: p.stat().st_mtime)
    return [(s, read_json(root / s / "DONE.json")) for s in listed] + \
        [(str(p.parent.relative_to(root)), read_json(p)) for p in rest]


def label(stage: str) -> str:
    """`iter_1/eval_sft` -> `it1:sft` (evaluation folders are eval_<point>)."""
    it, _, name = stage.rpartition("/")
    return f"{it.replace('iter_', 'it')}:{name.removeprefix('eval_')}"


def correctness(root: Path, stage: str, test: str) -> dict[str, float]:
    """Per-question mean correctness of one eval stage on one test set."""
    return pass_rates(read_jsonl(root / stage / test / "graded.jsonl"))


def paired(ref: dict[str, float], new: dict[str, float]) -> dict:
    """Difference new - ref over shared questions: mean, 95% normal interval, exact McNemar p."""
    ids = sorted(set(ref) & set(new))
    diffs = [new[i] - ref[i] for i in ids]
    m = len(diffs)
    mean = sum(diffs) / m
    sd = sqrt(sum((x - mean) ** 2 for x in diffs) / (m - 1)) if m > 1 else 0.0
    b = sum(1 for i in ids if new[i] == 1 and ref[i] == 0)  # discordant pairs (0/1 scores)
    c = sum(1 for i in ids if new[i] == 0 and ref[i] == 1)
    k, n = min(b, c), b + c
    p = min(1.0, 2 * sum(comb(n, j) for j in range(k + 1)) / 2 ** n) if n else 1.0
    return {"n": m, "diff": mean, "ci95": [mean - 1.96 * sd / sqrt(m), mean + 1.96 * sd / sqrt(m)],
            "gained": b, "lost": c, "mcnemar_p": p}


def change(c: dict, scale: float = 100, digits: int = 1) -> str:
    """`paired`'s difference and interval as `+9.5 [+2.9, +16.1]` (points by default)."""
    lo, hi = c["ci95"]
    return f"{scale * c['diff']:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def _plot_accuracy(evals, tests, out: Path, plt) -> None:
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(evals) + 2), 3.8))
    xs = list(range(len(evals)))
    for t in tests:
        pts = [(x, st["results"][t]) for x, (_, st) in zip(xs, evals) if t in st["results"]]
        if not pts:
            continue
        acc = [100 * r["accuracy"] for _, r in pts]
        err = [[100 * (r["accuracy"] - r["accuracy_ci95"][0]) for _, r in pts],
               [100 * (r["accuracy_ci95"][1] - r["accuracy"]) for _, r in pts]]
        ax.errorbar([x for x, _ in pts], acc, yerr=err, marker="o", capsize=3, label=f"{t} (greedy/pass@1)")
        majs = sorted({k for _, r in pts for k in r if k.startswith("maj@")})
        for k in majs:
            ax.plot([x for x, r in pts if k in r], [100 * r[k] for _, r in pts if k in r], "--", marker="s",
                    label=f"{t} {k}")
    ax.set_xticks(xs, [label(s) for s, _ in evals], rotation=20)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("held-out accuracy per stage (95% interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _pass_curves(root: Path, done) -> dict[str, list[tuple[int, float]]]:
    """pass@k for k = 1..n of every sampling stage (training questions) and sampled eval."""
    curves = {}
    for stage, _ in done:
        for graded in sorted((root / stage).glob("**/graded.jsonl")):
            by = {k: [bool(r["correct"]) for r in v] for k, v in group(read_jsonl(graded)).items()}
            n = min(len(v) for v in by.values()) if by else 0
            if n < 2:
                continue
            name = label(stage) + ("" if graded.parent == root / stage else f" {graded.parent.name}")
            curves[name] = [(k, sum(pass_at_k(n, sum(v[:n]), k) for v in by.values()) / len(by))
                            for k in range(1, n + 1)]
    return curves


def _lines(plt, path: Path, series: dict, xlabel: str, ylabel: str, title: str, marker=None) -> None:
    """One line per named series of (x, y) points, saved as a PNG."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, pts in series.items():
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _simple_plots(root: Path, done, curves, plt) -> list[str]:
    made = []
    if curves:
        _lines(plt, root / "pass_at_k.png", {n: [(k, 100 * v) for k, v in pts] for n, pts in curves.items()},
               "k", "pass@k (%)", "pass@k (unbiased) per sampling stage", marker="o")
        made.append("pass_at_k.png")
    pairs = [(label(s), PAIR_FILES[s.split("/")[-1]][1], st.get("rows", 0)) for s, st in done
             if s.split("/")[-1] in PAIR_FILES]
    if pairs:
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(pairs) + 2), 3.2))
        ax.bar(range(len(pairs)), [n for _, _, n in pairs], color=["C0" if k == "DPO pairs" else "C1"
                                                                   if k == "RFT rows" else "C2" for _, k, _ in pairs])
        ax.set_xticks(range(len(pairs)), [f"{s}\n{k}" for s, k, _ in pairs], fontsize=7)
        ax.set_ylabel("rows")
        ax.set_title("pairs / RFT rows per iteration")
        fig.tight_layout()
        fig.savefig(root / "pairs.png", dpi=110)
        plt.close(fig)
        made.append("pairs.png")
    margins = {}
    for s, _ in done:
        path = root / s / "metrics.jsonl"
        if path.is_file():
            rows = [r for r in read_jsonl(path) if "rewards/margins" in r]
            if rows:
                margins[label(s)] = [(r["step"], r["rewards/margins"]) for r in rows]
    if margins:
        _lines(plt, root / "margins.png", margins, "training step", "reward margin (chosen - rejected)",
               "DPO margins during training")
        made.append("margins.png")
    fig, ax = plt.subplots(figsize=(6, max(2.5, 0.28 * len(done) + 1)))
    ax.barh(range(len(done)), [st.get("seconds", 0) for _, st in done])
    ax.set_yticks(range(len(done)), [s for s, _ in done], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("time per stage")
    fig.tight_layout()
    fig.savefig(root / "time.png", dpi=110)
    plt.close(fig)
    return made + ["time.png"]


def summary_table(root: Path, evals) -> tuple[str, list[dict]]:
    """Markdown table: accuracy [95% CI] per eval point and test set, and the paired change against
    the reference point (warm-up SFT, else the first eval)."""
    if not evals:
        return "(no evaluations)", []
    ref_stage = next((s for s, _ in evals if s.endswith("/eval_warmup_sft")), evals[0][0])
    tests = sorted({t for _, st in evals for t in st["results"]})
    lines = ["| stage | test set | n | accuracy | 95% interval | change vs " + label(ref_stage)
             + " [95% interval] | gained/lost | McNemar p |", "|---|---|---|---|---|---|---|---|"]
    comps = []
    for stage, st in evals:
        for t in tests:
            r = st["results"].get(t)
            if r is None:
                continue
            lo, hi = r["accuracy_ci95"]
            cells = [label(stage), t, str(r["n"]), f"{100 * r['accuracy']:.1f}%", f"[{100 * lo:.1f}, {100 * hi:.1f}]"]
            if stage != ref_stage and (root / ref_stage / t / "graded.jsonl").is_file():
                c = paired(correctness(root, ref_stage, t), correctness(root, stage, t))
                comps.append({"stage": stage, "test": t, **c})
                cells += [change(c),
                          f"{c['gained']}/{c['lost']}", f"{c['mcnemar_p']:.3g}"]
            else:
                cells += ["(reference)" if stage == ref_stage else "", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), comps


def _in_run(root: Path, path: str) -> str:
    """A model path as the stages recorded it (relative to the loop's working folder, or absolute),
    as a path inside this run folder where it lies in one, so a moved run folder still matches."""
    parts = Path(path).parts
    # the run folder's name may also name a folder inside it (a run called `dpo` holds iter_1/dpo/):
    # the first occurrence whose rest lies in the run folder is the run folder itself
    hits = [i for i, p in enumerate(parts) if p == root.name]
    for i in hits:
        inside = root.resolve().joinpath(*parts[i + 1:])
        if inside.exists():
            return str(inside)
    if hits:
        return str(root.resolve().joinpath(*parts[hits[-1] + 1:]))
    return str(Path(path).resolve())


def stage_starts(root: Path, evals) -> list[tuple[str, str, list[str]]]:
    """(evaluation stage, the evaluation of the model its training started from (its
    train_config.yaml's `model`), the test sets both have graded) for every evaluated model whose
    start model was evaluated too (eval.after decides which are)."""
    by_model = {_in_run(root, st["model"]): s for s, st in evals if st.get("model")}
    out = []
    for stage, st in evals:
        if not st.get("model"):
            continue
        cfg_path = Path(_in_run(root, st["model"])).parent / "train_config.yaml"  # OUT/model -> OUT/
        if not cfg_path.is_file():
            continue
        start = by_model.get(_in_run(root, yaml.safe_load(cfg_path.read_text())["model"]))
        if start is not None and start != stage:
            tests = [t for t in sorted(st["results"]) if (root / start / t / "graded.jsonl").is_file()
                     and (root / stage / t / "graded.jsonl").is_file()]
            out.append((stage, start, tests))
    return out


def stage_gains(root: Path, evals) -> str:
    """Markdown: each evaluated model against the evaluated model its training started from, paired
    per test set: what that one stage added."""
    lines = []
    for stage, start, tests in stage_starts(root, evals):
        for t in tests:
            c = paired(correctness(root, start, t), correctness(root, stage, t))
            lines.append(f"| {label(stage)} | {label(start)} | {t} | {c['n']} | {change(c)} | "
                         f"{c['gained']}/{c['lost']} | {c['mcnemar_p']:.3g} |")
    if not lines:
        return ""
    return ("Stage by stage: each evaluated model against the evaluated model it was trained from, same "
            "questions.\n\n| stage | trained from | test set | n | change [95% interval] | gained/lost | McNemar p |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(lines))


TIME_HEADER = ("| stage | seconds | rows | model load (convert) s | backend start s | sampling s | grading s "
               "| training loop s |\n|---|---|---|---|---|---|---|---|\n")


def time_row(stage: str, st: dict) -> str:
    """One line of the time table: the stage's seconds and the overheads it recorded (`reused`: the
    previous stage's model and backend served it)."""
    o = st.get("overheads") or {}

    def sec(key: str) -> str:
        return f"{o[key]:.1f}" if isinstance(o.get(key), (int, float)) else ""

    load = "reused" if o.get("reused") else (f"({o['convert_s']:.1f})" if "convert_s" in o else sec("load_s"))
    sampling = f"{st['sample_seconds']:.0f}" if isinstance(st.get("sample_seconds"), (int, float)) else ""
    cells = [stage, f"{st.get('seconds', 0):.0f}", str(st.get("rows", st.get("samples", ""))), load,
             "" if o.get("reused") else sec("backend_s"), sampling, sec("grading_s"), sec("train_loop_s")]
    return "| " + " | ".join(cells) + " |"


def write_report(root: str | Path) -> str:
    """Write report.md and the plots; return the summary table (markdown) for printing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    done = stages(root)
    evals = [(s, st) for s, st in done if "results" in st]
    tests = sorted({t for _, st in evals for t in st["results"]})
    plots = []
    if evals:
        _plot_accuracy(evals, tests, root / "accuracy.png", plt)
        plots.append("accuracy.png")
    plots += _simple_plots(root, done, _pass_curves(root, done), plt)
    table, comps = summary_table(root, evals)
    from .report_arms import write_arms

    arms_text, arms_plots = write_arms(root, plt)
    table += "\n\n" + arms_text if arms_text else ""
    gains = stage_gains(root, evals)
    table += "\n\n" + gains if gains else ""
    from .report_labels import labels_table

    labels = labels_table(root, [s for s, _ in done])
    table += "\n\n" + labels if labels else ""
    total = sum(st.get("seconds", 0) for _, st in done)
    stage_rows = "\n".join(time_row(s, st) for s, st in done)
    text = (f"# Self-training report: {root.name}\n\n"
            f"Accuracy is greedy unless the eval section asks for samples; intervals are 95% (Wilson for\n"
            f"accuracy; paired normal interval for the change, with an exact McNemar test on the\n"
            f"questions that changed). Stage time in total: {total / 60:.1f} min.\n\n{table}\n\n"
            + "".join(f"![{p[:-4]}]({p})\n\n" for p in arms_plots + plots)
            + TIME_HEADER + stage_rows + "\n")
    atomic_write_text(root / "report.md", text)
    from .records import write_json

    write_json(root / "comparisons.json", comps)
    return table


if __name__ == "__main__":
    print(write_report(sys.argv[1]))
