"""`mathpo grade IN.jsonl --output OUT.jsonl [--workers N]`: add `pred`, `correct`, `strict_correct`
(and `timeout`) to each row, same rows, same order. Grading itself lives in mathpo.grading."""

from __future__ import annotations

from .. import grading
from ..errors import UserError
from ..grading.metrics import summarize
from ..progress import bar
from ..records import read_jsonl, write_jsonl


def register(sub) -> None:
    parser = sub.add_parser("grade", help="grade completions against gold answers",
                            description="Reads rows with at least `completion` and `gold`; writes the same rows "
                                        "in the same order adding `pred` (the extracted answer or null), "
                                        "`correct` (flexible), `strict_correct` (explicit answer marker needed), "
                                        "`timeout` (a symbolic check ran past its limit; counted wrong) and "
                                        "`truncated` (why the final answer is cut off, or null; never correct). "
                                        "A row's `finish` (length = stopped at the token limit) is used.")
    parser.add_argument("input", help="JSONL rows with completion and gold")
    parser.add_argument("--output", "-o", required=True, help="graded JSONL (written atomically)")
    parser.add_argument("--workers", type=int, default=1, help="processes for symbolic checks (default: 1)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="wall-clock seconds per symbolic check (default: 3)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError("--timeout must be > 0")
    rows = read_jsonl(args.input, required=("completion", "gold"))
    if not rows:
        raise UserError(f"{args.input}: no rows")
    with bar(len(rows), "grade", unit="row") as progress:
        graded = grading.grade_rows(rows, workers=args.workers, timeout=args.timeout, progress=progress)
    write_jsonl(args.output, graded)
    timeouts = sum(r["timeout"] for r in graded)
    cut = f"{sum(bool(r['truncated']) for r in graded)} truncated (never correct)"
    if all("id" in r for r in graded):
        s = summarize(graded)
        print(f"graded {len(graded)} rows over {s['n']} questions: accuracy {100 * s['accuracy']:.1f}% "
              f"(strict {100 * s['strict_accuracy']:.1f}%), {timeouts} timeouts, {cut}")
    else:
        print(f"graded {len(graded)} rows: {sum(r['correct'] for r in graded)} correct, {timeouts} timeouts, {cut}")
    print(f"wrote {args.output}")
    return 0
