"""How often the rollout locator finds the hand-marked first wrong step (the Step-DPO claim).

    mathpo loop configs/demo.yaml                       # makes runs/demo/iter_0/warmup_sft/model
    python bench/locator.py --model runs/demo/iter_0/warmup_sft/model --calculator \
        --rollouts 8 --chunk 4 --max-new-tokens 128

The fixture (tests/fixtures/locator_marked.jsonl) holds 40 wrong solutions of the demo's warm-up SFT
model (SmolLM2-135M-Instruct after `warmup_sft` of configs/demo.yaml; 46.5% greedy on the held-out
synthetic problems, 38.6% of its samples at T 0.8 correct), one per question, drawn at random from
its `iter_1/sample` stage among questions it solved at least once. Each has its first wrong step
marked by hand (`marked_step`, 1-based over `pairs.split.split(completion)`, and a `reason`), the
exact `prompt` it was sampled with, and the question's correct samples. A step counts as right
when its arithmetic is a correct move toward the answer (unit words aside); an answer line
`#### N` given before the last needed operation is the wrong step.
The locator never sees the marks. Prints per-solution results, then the figures last: exact hit
rate with its 95% (Wilson) interval, hit rate within one step, rollouts per solution, seconds.
Rollouts only carry signal where the model solves a fair share of the questions: measure with such a model.

Building a fixture (marks are then added by a person reading each solution):
    python bench/locator.py --prepare runs/demo/iter_1/sample/graded.jsonl --fixture candidates.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from mathpo import models, prompts  # noqa: E402
from mathpo.pairs.locate import RolloutLocator, Task  # noqa: E402
from mathpo.pairs.split import split  # noqa: E402
from mathpo.records import read_jsonl  # noqa: E402
from mathpo.sampling import SamplingParams, get_backend  # noqa: E402


def tasks_from(rows: list[dict], split_mode: str = "auto") -> list[Task]:
    return [Task(r["prompt"], split(r["completion"], split_mode), str(r["gold"]), list(r["correct_samples"]),
                 int(r["samples"]), r["question"]) for r in rows]


def score(rows: list[dict], found: list[int | None]) -> dict:
    n = len(rows)
    exact = sum(f == r["marked_step"] for r, f in zip(rows, found))
    near = sum(f is not None and abs(f - r["marked_step"]) <= 1 for r, f in zip(rows, found))
    early = sum(f is not None and f < r["marked_step"] for r, f in zip(rows, found))
    late = sum(f is not None and f > r["marked_step"] for r, f in zip(rows, found))
    from mathpo.grading.metrics import ci95

    hits = [float(f == r["marked_step"]) for r, f in zip(rows, found)]
    return {"solutions": n, "hit_rate": exact / n, "hit_rate_ci95": [round(x, 3) for x in ci95(hits)],
            "within_one": near / n, "too_early": early, "too_late": late,
            "not_located": sum(f is None for f in found)}


def prepare(graded: str, out: str) -> None:
    """Every unique wrong solution with its numbered steps to read and its question's correct samples."""
    from mathpo.pairs.pool import group
    from mathpo.records import write_jsonl

    rows = []
    for qid, qrows in group(read_jsonl(graded)).items():
        good = [r["completion"] for r in qrows if r["correct"]]
        seen = set()
        for r in qrows:
            if r["correct"] or r["completion"].strip() in seen:
                continue
            seen.add(r["completion"].strip())
            steps = [s.text for s in split(r["completion"])]
            rows.append({"key": f"{qid}/{r['sample']}", "id": qid, "question": r["question"], "gold": r["gold"],
                         "prompt": r["prompt"], "template": r.get("template"), "completion": r["completion"],
                         "pred": r.get("pred"),
                         "correct_samples": good, "samples": len(qrows), "steps": steps})
    write_jsonl(out, rows)
    print(f"{len(rows)} wrong solutions of {len({r['id'] for r in rows})} questions -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--fixture", default=str(REPO / "tests/fixtures/locator_marked.jsonl"))
    ap.add_argument("--template", default=None, help="default: the fixture rows' `template`")
    ap.add_argument("--limit", type=int, default=None, help="only the first N solutions")
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--search", default="binary", choices=["binary", "linear"])
    ap.add_argument("--margin", type=float, default=None)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calculator", action="store_true",
                    help="force <<expr=...>> results, as when the fixture was sampled")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the figures and per-solution results here")
    ap.add_argument("--probe", action="store_true", help="estimate v_0 by rollouts where no correct sample is given")
    ap.add_argument("--prepare", default=None, metavar="GRADED", help="write fixture candidates from graded rows")
    a = ap.parse_args()
    if a.prepare:
        return prepare(a.prepare, a.fixture)
    torch.set_num_threads(a.threads)
    rows = read_jsonl(a.fixture)[:a.limit]
    a.template = a.template or rows[0].get("template", "chat-step")
    loaded = models.load(a.model)
    backend = get_backend("hf", loaded, add_special_tokens=prompts.add_special_tokens(a.template),
                          batch_size=a.batch_size)
    params = SamplingParams(temperature=a.temperature, top_p=a.top_p, max_new_tokens=a.max_new_tokens,
                            stop=prompts.get(a.template).stop, seed=a.seed, calculator=a.calculator)
    loc = RolloutLocator(backend, params, rollouts=a.rollouts, chunk=a.chunk, search=a.search, margin=a.margin,
                         probe_unsolved=a.probe)
    t0 = time.time()
    results = loc.locate(tasks_from(rows))
    secs = time.time() - t0
    found = [r.error for r in results]
    for row, res in zip(rows, results):
        mark = "ok " if res.error == row["marked_step"] else "   "
        print(f"{mark}{row['key']:<14} marked {row['marked_step']:>2} found {str(res.error):>4} "
              f"of {len(split(row['completion'])):>2} steps, {res.rollouts:>3} rollouts")
    figures = {**score(rows, found), "rollouts": sum(r.rollouts for r in results),
               "rollouts_per_solution": round(sum(r.rollouts for r in results) / len(rows), 2),
               "generate_calls": loc.calls, "seconds": round(secs, 1),
               "settings": {k: getattr(a, k) for k in ("model", "template", "rollouts", "chunk", "search", "margin",
                                                       "temperature", "top_p", "max_new_tokens", "seed", "calculator")},
               "cpu_threads": a.threads, "device": loaded.device, "host_cpus": os.cpu_count()}
    if a.json:
        Path(a.json).write_text(json.dumps({**figures, "found": found}, indent=2))
    print(json.dumps(figures, indent=2))
    lo, hi = figures["hit_rate_ci95"]
    print(f"hit rate {100 * figures['hit_rate']:.1f}% ({sum(f == r['marked_step'] for r, f in zip(rows, found))}"
          f"/{len(rows)}, 95% interval {100 * lo:.1f}-{100 * hi:.1f}), "
          f"within one step {100 * figures['within_one']:.1f}%, "
          f"{figures['rollouts_per_solution']} rollouts per solution, {figures['seconds']} s")


if __name__ == "__main__":
    main()
