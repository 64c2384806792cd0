"""`mathpo data synth`: write synthetic GSM8K-style problems (the embedded demo's data) as records.

    mathpo data synth --n 500 --steps 1-4 --seed 0 --split train --output runs/data/synth-train.jsonl

Train and test never share a question: each question belongs to one split by the hash of its
text (see mathpo.data.synth). The file is read back by `--dataset FILE` in every command.
"""

from __future__ import annotations

from collections import Counter

from ..data import synth
from ..records import write_jsonl
from . import common


def register(sub) -> None:
    parser = sub.add_parser("data", help="make datasets (synth: synthetic word problems)",
                            description="make datasets")
    inner = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _, opts = common.new_command(inner, "synth", "generate GSM8K-style multi-step word problems", run_synth)
    opts.add("--n", type=int, default=500, help="number of problems")
    opts.add("--steps", default="1-4", help="steps per problem, a range A-B within 1-4 (difficulty)")
    opts.add("--seed", type=int, default=0, help="random seed; same seed and options give the same file")
    opts.add("--split", default="train", choices=list(synth.SPLITS),
             help="train or test; the two never share a question (split by a hash of the question)")
    opts.add("--output", default=None, help="JSONL file to write (default runs/data/synth-SPLIT-SEED.jsonl)")


def run_synth(args) -> int:
    cfg = args.options.resolve(args)
    rows = synth.generate(cfg["n"], synth.parse_steps(cfg["steps"]), cfg["seed"], cfg["split"])
    out = cfg["output"] or f"runs/data/synth-{cfg['split']}-{cfg['seed']}.jsonl"
    write_jsonl(out, rows)
    by_steps = Counter(r["steps"] for r in rows)
    print(f"{'split':<7}{'problems':>9}  " + "".join(f"{f'{k} steps':>9}" for k in sorted(by_steps)))
    print(f"{cfg['split']:<7}{len(rows):>9}  " + "".join(f"{by_steps[k]:>9}" for k in sorted(by_steps)))
    print(f"wrote {out}")
    return 0
