"""experiments/across_seeds.py: per-seed differences read back from seeds tables and the across-seeds
t interval over the seeds of several tables, checked against a hand-computed case."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("across_seeds", Path(__file__).parents[1] / "experiments/across_seeds.py")
across = importlib.util.module_from_spec(spec)
spec.loader.exec_module(across)

A = """## Arms across seeds

| arm | test set | seed 0 | seed 1 | spread |
|---|---|---|---|---|
| st | synth | 50.0% | 52.0% | 2.0 |

| comparison | test set | seed 0 | seed 1 | seeds pooled | across seeds (t) |
|---|---|---|---|---|---|
| dpo-st - st | synth | +2.0 [-1.0, +5.0] | +4.0 [+0.5, +7.5] | +3.0 [+0.6, +5.4] | +3.0 [-9.7, +15.7] |

| stage | trained from | test set | seed 0 | seed 1 | seeds pooled | across seeds (t) |
|---|---|---|---|---|---|---|
| full/it2:step_dpo | full/it2:sft | synth | +0.4 [-1.5, +2.3] | -0.0 [-2.0, +2.0] | | |
"""
B = A.replace("seed 0", "seed 2").replace("seed 1", "seed 3").replace("+2.0 [-1.0, +5.0]", "+6.0 [+2.0, +10.0]")


def test_cells_read_back_per_row_and_seed():
    rows = across.per_seed(A)
    assert rows == {"dpo-st - st:synth": {0: (2.0, -1.0, 5.0), 1: (4.0, 0.5, 7.5)},
                    "full/it2:step_dpo:full/it2:sft:synth": {0: (0.4, -1.5, 2.3), 1: (-0.0, -2.0, 2.0)}}
    # the accuracy table has no paired cells, the pooled and across columns are not seeds


def test_across_seeds_of_two_tables_by_hand():
    rows = across.combine([A, B.replace("| seed 3 |", "| seed 9 |")])
    assert set(rows["dpo-st - st:synth"]) == {0, 1, 2, 9}
    only = {"dpo-st - st:synth": {s: v for s, v in rows["dpo-st - st:synth"].items() if s != 9}}
    # seeds 0, 1, 2: +2, +4, +6 -> mean 4.0, sd 2.0, t(2) = 4.303: 4.0 -+ 4.303 * 2 / sqrt(3) = [-0.97, +8.97]
    text = across.table(only)
    assert "| dpo-st - st:synth | +2.0 [-1.0, +5.0] | +4.0 [+0.5, +7.5] | +6.0 [+2.0, +10.0] | 2 of 3 |" in text
    assert text.rstrip().endswith("| +4.0 [-1.0, +9.0] (3 seeds) |")


def test_a_seed_in_two_tables_or_a_missing_row_is_refused():
    with pytest.raises(SystemExit, match="seed 0 is in two tables"):
        across.combine([A, A])
    with pytest.raises(SystemExit, match="no such row: nope"):
        across.table(across.combine([A]), ["nope"])
