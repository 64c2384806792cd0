"""The across-seeds interval over the seeds of several seeds tables (`python -m mathpo.report_arms`'s
seeds.md), for when the earlier seeds' run folders are gone and only their tables remain: each
table's per-seed paired differences are read back from the markdown, and `report_arms.across_seeds`
(mean of the seeds' differences, t interval over the seeds) runs over all of them together.

    python experiments/across_seeds.py docs/ablation/seeds-v3.md runs/ablation-v3-seed4/seeds.md \
        --rows "dpo-st - st:synth" "full/it2:step_dpo:synth" "full - warm-up:multiarith"

A row is named by its first cells up to the test set, joined by ':' (a comparison `b - a` and its test
set, or a stage, the stage it was trained from and the test set); without --rows every row found in
every table. The tables print differences to 0.1 point, so the mean here may differ from one over
the runs' own figures by up to 0.05. A seed found in two tables is an error (the same run counted
twice). Prints a markdown table: each seed's difference and interval, the seeds whose interval lies
above 0, and the across-seeds mean with its interval.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mathpo.report import change  # noqa: E402
from mathpo.report_arms import across_seeds  # noqa: E402

CELL = re.compile(r"^([+-]\d+(?:\.\d+)?) \[([+-]\d+(?:\.\d+)?), ([+-]\d+(?:\.\d+)?)\]$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def per_seed(text: str) -> dict[str, dict[int, tuple[float, float, float]]]:
    """{row name: {seed: (difference, low, high) in points}} from every table of a seeds.md whose header
    has `seed N` columns and a `test set` column."""
    rows: dict[str, dict[int, tuple[float, float, float]]] = {}
    seeds: list[int | None] = []
    key_cols = 0
    for line in text.splitlines():
        if not line.startswith("|"):
            seeds = []
            continue
        cells = _cells(line)
        if "test set" in cells:  # a header: the key columns end at the test set
            key_cols = cells.index("test set") + 1
            seeds = [int(m.group(1)) if (m := re.fullmatch(r"seed (\d+)", c)) else None for c in cells]
            continue
        if not seeds or set(line) <= set("|-: "):
            continue
        name = ":".join(cells[:key_cols])
        for seed, cell in zip(seeds, cells):
            if seed is not None and (m := CELL.match(cell)):
                rows.setdefault(name, {})[seed] = tuple(float(x) for x in m.groups())
    return rows


def combine(texts: list[str]) -> dict[str, dict[int, tuple[float, float, float]]]:
    """Every table's seeds side by side, row by row; a seed in two tables is refused."""
    out: dict[str, dict[int, tuple[float, float, float]]] = {}
    owner: dict[int, int] = {}
    for i, text in enumerate(texts):
        for name, seeds in per_seed(text).items():
            for seed, value in seeds.items():
                if owner.setdefault(seed, i) != i:
                    raise SystemExit(f"seed {seed} is in two tables (files {owner[seed] + 1} and {i + 1})")
                out.setdefault(name, {})[seed] = value
    return out


def table(rows: dict[str, dict[int, tuple[float, float, float]]], names: list[str] | None = None) -> str:
    names = names or list(rows)
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"no such row: {missing[0]} (rows: {', '.join(rows)})")
    seeds = sorted({s for n in names for s in rows[n]})
    head = " | ".join(f"seed {s}" for s in seeds)
    lines = [f"| row | {head} | seeds with interval above 0 | across seeds (t) |",
             "|---|" + "---|" * (len(seeds) + 2)]
    for n in names:
        got = rows[n]
        cells = [f"{got[s][0]:+.1f} [{got[s][1]:+.1f}, {got[s][2]:+.1f}]" if s in got else "" for s in seeds]
        above = sum(1 for v in got.values() if v[1] > 0)
        c = across_seeds([got[s][0] / 100 for s in seeds if s in got])
        across = f"{change(c)} ({c['seeds']} seeds)" if c else ""
        lines.append(f"| {n} | {' | '.join(cells)} | {above} of {len(got)} | {across} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", help="seeds.md files (report_arms' seeds tables)")
    parser.add_argument("--rows", nargs="*", default=None, help="rows to keep, as 'comparison:test set'")
    a = parser.parse_args(argv)
    print(table(combine([Path(t).read_text(encoding="utf-8") for t in a.tables]), a.rows), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
