"""bench/decode_attention.py: both decode paths timed on one cache, both close to float64 attention."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

path = Path(__file__).parents[1] / "bench/decode_attention.py"
spec = importlib.util.spec_from_file_location("decode_attention", path)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_times_both_paths_and_checks_them_against_float64(capsys):
    assert bench.main(["--layers", "2", "--rows", "8", "--n", "2", "--gen", "20", "--reps", "1",
                       "--dtype", "float32"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["fused_ms_per_step"] > 0 and out["flash_ms_per_step"] > 0
    # the ratio of the unrounded times; the printed ms are rounded to 0.001
    assert out["fused_vs_flash"] == pytest.approx(out["flash_ms_per_step"] / out["fused_ms_per_step"], rel=0.1)
    assert out["fused_max_error"] < 1e-5 and out["flash_max_error"] < 1e-5


def test_rows_must_fill_whole_prompts():
    with pytest.raises(SystemExit):
        bench.main(["--rows", "7", "--n", "2"])
