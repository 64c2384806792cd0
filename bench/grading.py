"""Benchmark: mathpo's grader vs plain Math-Verify `parse`/`verify` on the same 5,000 completions.

    python bench/grading.py [--data-dir ../shared/data] [--n 5000] [--workers 2] [--seed 0] [--show 25]

The completions are built from real benchmark data (GSM8K test/train solutions, MATH test solutions):
gold solutions (correct), the same with the final answer perturbed (wrong), MATH answers rewritten
in equivalent forms (`\\dfrac`, `a/b`, decimals, `x = `, units, degrees, spacing), Minerva's
"Final Answer: ... I hope it is correct." and "The answer is" endings, `$`/thousands separators on
GSM8K, and run-on text (the solution followed by a new "Question: ..." with its own answer).
Each row also says which verdict it was built to have (`expect`), so both graders' errors are counted.
Prints both throughputs, their ratio, verdict disagreements with a sample; the last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mathpo.grading import grade_rows  # noqa: E402
from mathpo.grading.extract import after_hashes, last_boxed  # noqa: E402


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def _perturb_number(s: str, rng: random.Random) -> str | None:
    nums = list(re.finditer(r"\d+", s))
    if not nums:
        return None
    m = rng.choice(nums)
    value = int(m.group()) + rng.choice([1, 2, 3, 7, 10])
    return s[: m.start()] + str(value) + s[m.end():]


def _with_commas(n: str) -> str:
    return f"{int(n):,}" if re.fullmatch(r"\d{4,}", n) else n


def _equivalent_forms(ans: str) -> list[str]:
    """Rewrites of a MATH answer that a correct grader must accept."""
    forms = []
    if "\\frac" in ans:
        forms.append(ans.replace("\\frac", "\\dfrac"))
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", ans)
    if m:
        forms.append(f"{m.group(1)}{m.group(2)}/{m.group(3)}")
        num, den = int(m.group(2)), int(m.group(3))
        if den and 10 ** 6 % den == 0:
            forms.append(m.group(1) + str(num / den))
    if re.fullmatch(r"-?\d+", ans):
        forms += [ans + ".0", f"x = {ans}", _with_commas(ans) if len(ans) > 4 else ans + "\\text{ units}"]
    if re.fullmatch(r"\(.*,.*\)", ans):
        forms.append(ans.replace(",", ", "))
    if "\\sqrt{" in ans:
        forms.append(re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", ans))
    if "^\\circ" in ans:
        forms.append(ans.replace("^\\circ", ""))
    if ans.startswith("(") and ans.endswith(")"):
        forms.append("\\left(" + ans[1:-1] + "\\right)")
    return [f for f in forms if f != ans]


def build(data_dir: Path, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    gsm = _read(data_dir / "gsm8k" / "test.jsonl") + _read(data_dir / "gsm8k" / "train.jsonl")
    math_rows = _read(data_dir / "math" / "test.jsonl")
    rows: list[dict] = []

    def add(kind, completion, gold, expect):
        rows.append({"id": f"{kind}-{len(rows)}", "kind": kind, "completion": completion, "gold": gold,
                     "expect": expect})

    half = n // 2
    for i in range(half):
        r = gsm[i]
        sol = r["answer"]
        gold = after_hashes(sol)
        body = sol[: sol.index("####")].rstrip()
        other = gsm[(i + 977) % len(gsm)]
        v = i % 6
        if v == 0:
            add("gsm-gold", sol, gold, True)
        elif v == 1:
            add("gsm-wrong", body + "\n#### " + (_perturb_number(gold, rng) or "0"), gold, False)
        elif v == 2:
            add("gsm-answer-is", body + f"\nThe answer is ${_with_commas(gold)}.", gold, True)
        elif v == 3:
            add("gsm-run-on", sol + "\n\nQuestion: " + other["question"] + "\nAnswer: " + other["answer"], gold, True)
        elif v == 4:
            add("gsm-boxed", body + f"\nSo the final answer is $\\boxed{{{_with_commas(gold)}}}$.", gold, True)
        else:
            wrong = _perturb_number(gold, rng) or "0"
            add("gsm-wrong-answer-is", body + f"\nThe answer is {wrong}.", gold, False)
    for i in range(n - half):
        r = math_rows[i % len(math_rows)]
        sol = r["solution"]
        gold = last_boxed(sol)
        if gold is None:
            continue
        cut = sol.rfind("\\boxed")
        v = i % 5
        if v == 0:
            add("math-gold", sol, gold, True)
        elif v == 1:
            wrong = _perturb_number(gold, rng) or (gold + "+1")
            add("math-wrong", sol[:cut] + "\\boxed{" + wrong + "}" + sol[cut:][len("\\boxed{" + gold + "}"):], gold,
                False)
        elif v == 2:
            forms = _equivalent_forms(gold)
            form = rng.choice(forms) if forms else gold
            add("math-equiv-form", sol[:cut] + "\\boxed{" + form + "}" + sol[cut:][len("\\boxed{" + gold + "}"):],
                gold, True)
        elif v == 3:
            body = sol[:cut].rstrip()
            add("math-minerva", body + f"\nFinal Answer: The final answer is ${gold}$. I hope it is correct.", gold,
                True)
        else:
            other = math_rows[(i + 1234) % len(math_rows)]
            add("math-run-on", sol + "\n\nProblem: " + other["problem"] + "\nSolution: " + other["solution"], gold,
                True)
    return rows[:n]


def math_verify_grade(rows: list[dict]) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for r in rows:
        gold = parse("$" + r["gold"] + "$")
        out.append(bool(verify(gold, parse(r["completion"]))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=25, help="disagreements to print")
    ap.add_argument("--dump", default=None, help="write every disagreement to this JSONL file")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    rows = build(Path(args.data_dir), args.n, args.seed)
    kinds = sorted(Counter(r["kind"] for r in rows).items())
    print(f"{len(rows)} completions: " + ", ".join(f"{k} {v}" for k, v in kinds))

    t = time.perf_counter()
    ours = grade_rows(rows, workers=args.workers)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = math_verify_grade(rows)
    t_mv = time.perf_counter() - t

    ours_ok = [g["correct"] for g in ours]
    dis = [(g, mv) for g, mv in zip(ours, theirs) if g["correct"] != mv]
    wrong_ours = sum(g["correct"] != g["expect"] for g in ours)
    wrong_mv = sum(mv != g["expect"] for g, mv in zip(ours, theirs))
    by_kind = Counter(g["kind"] for g, _ in dis)
    print(f"mathpo     : {len(rows) / t_ours:9.1f} completions/s ({t_ours:.2f} s, {args.workers} workers), "
          f"accuracy {sum(ours_ok) / len(rows):.4f}, verdicts against the built label: {wrong_ours}, "
          f"timeouts {sum(g['timeout'] for g in ours)}")
    print(f"math-verify: {len(rows) / t_mv:9.1f} completions/s ({t_mv:.2f} s, 1 process), "
          f"accuracy {sum(theirs) / len(rows):.4f}, verdicts against the built label: {wrong_mv}")
    print(f"speed ratio {t_mv / t_ours:.1f}x; disagreements {len(dis)}: "
          + ", ".join(f"{k} {v}" for k, v in by_kind.most_common()))
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as f:
            for g, mv in dis:
                f.write(json.dumps({**g, "math_verify": mv}, ensure_ascii=False) + "\n")
    # a sample across kinds: round-robin over the kinds, in order of appearance
    queues = {k: [d for d in dis if d[0]["kind"] == k] for k in by_kind}
    sample = [q[i] for i in range(args.show) for q in queues.values() if i < len(q)][: args.show]
    for g, mv in sample:
        print(f"  [{g['kind']}] gold={g['gold']!r} pred={g['pred']!r} mathpo={g['correct']} math-verify={mv} "
              f"built-label={g['expect']}")
    print(json.dumps({"completions": len(rows), "mathpo_per_s": round(len(rows) / t_ours, 1),
                      "math_verify_per_s": round(len(rows) / t_mv, 1), "ratio": round(t_mv / t_ours, 2),
                      "workers": args.workers, "disagreements": len(dis),
                      "disagreements_by_kind": dict(by_kind), "mathpo_vs_label": wrong_ours,
                      "math_verify_vs_label": wrong_mv, "mathpo_timeouts": sum(g["timeout"] for g in ours)}))


if __name__ == "__main__":
    main()
