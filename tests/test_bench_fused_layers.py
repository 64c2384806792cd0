"""bench/fused_layers.py: the fused and unfused layer stacks and both samplers timed side by side,
with the same logits and the same picks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mathpo.sampling import kernel
from mathpo.sampling.packed import _kernel_ok

path = Path(__file__).parents[1] / "bench/fused_layers.py"
spec = importlib.util.spec_from_file_location("fused_layers", path)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.skipif(kernel.ops() is None or not _kernel_ok(torch.bfloat16),
                    reason="needs mathpo's CPU ops and oneDNN's bf16 weight reorder")
def test_times_both_paths_on_the_same_inputs(capsys, smol_path):
    assert bench.main(["--model", str(smol_path), "--rows", "4", "--reps", "1"]) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["fused_modules"] == 4 * 30 + 1  # SmolLM2-135M: 30 layers of 2 norms, attention, MLP; the last norm
    assert out["same_logits"] and out["same_picks"]
    assert out["unfused_ms_per_step"] > 0 and out["fused_ms_per_step"] > 0 and out["fused_sampling_ms"] > 0
    assert out["fused_vs_unfused"] == pytest.approx(out["unfused_ms_per_step"] / out["fused_ms_per_step"], rel=0.1)
