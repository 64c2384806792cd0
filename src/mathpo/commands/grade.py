"""`mathpo grade IN.jsonl --output OUT.jsonl`: add `pred`, `correct`, `strict_correct` to each row."""

from __future__ import annotations

from .. import grading
from ..errors import UserError
from ..grading.metrics import summarize
from ..records import read_jsonl, write_jsonl


def register(sub) -> None:
    parser = sub.add_parser("grade", help="grade completions against gold answers",
                            description="Reads rows with at least `completion` and `gold`; writes the same rows "
                                        "in the same order adding `pred`, `correct` (flexible), `strict_correct`.")
    parser.add_argument("input", help="JSONL rows with completion and gold")
    parser.add_argument("--output", "-o", required=True, help="graded JSONL (written atomically)")
    parser.add_argument("--workers", type=int, default=1, help="grading processes (default: 1)")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    rows = read_jsonl(args.input, required=("completion", "gold"))
    if not rows:
        raise UserError(f"{args.input}: no rows")
    graded = grading.grade_rows(rows, workers=args.workers)
    write_jsonl(args.output, graded)
    if all("id" in r for r in graded):
        s = summarize(graded)
        print(f"graded {len(graded)} rows over {s['n']} questions: accuracy {100 * s['accuracy']:.1f}% "
              f"(strict {100 * s['strict_accuracy']:.1f}%)")
    else:
        print(f"graded {len(graded)} rows: {sum(r['correct'] for r in graded)} correct")
    print(f"wrote {args.output}")
    return 0
