"""bench/sampling.py's bookkeeping with --repeats: runs interleaved, backends started once, each
ratio the median of the repeats' own ratios with its range (checked against a hand-made case)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_sampling", Path(__file__).parents[1] / "bench/sampling.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_ratio_is_the_median_of_paired_repeats():
    per_rep = {"a": [{"tokens_per_s": x} for x in (300, 100, 200)],
               "b": [{"tokens_per_s": x} for x in (100, 100, 400)]}  # repeat ratios 3.0, 1.0, 0.5
    figures = {}
    bench._ratio(figures, per_rep, "a_vs_b", "a", "b")
    assert figures == {"a_vs_b": 1.0, "a_vs_b_range": [0.5, 3.0]}  # not 600/600 of the sums, nor 200/100 of medians
    one = {}
    bench._ratio(one, {"a": per_rep["a"][:1], "b": per_rep["b"][:1]}, "a_vs_b", "a", "b")
    assert one == {"a_vs_b": 3.0}
    assert bench._median([4, 1, 3, 2]) == 2.5


def test_repeats_interleave_runs_and_start_each_backend_once(tiny_model_dir, capsys, monkeypatch):
    import torch

    from mathpo.sampling import SamplingParams

    started = []
    real = bench.backend_for

    def counting(run, loaded, backends, startup, batch_size):
        if run not in backends and not (run == "mathpo" and "auto" in backends):
            started.append(run)
        return real(run, loaded, backends, startup, batch_size)

    monkeypatch.setattr(bench, "backend_for", counting)
    texts = ["Question: 1+1?\nAnswer:", "Question: 2+5?\nAnswer:"]
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=4, seed=0)
    torch.manual_seed(0)
    f = bench.bench_device("cpu", texts, params, ["plain", "mathpo"], str(tiny_model_dir), repeats=3)
    out = capsys.readouterr().out
    order = [line.split()[1] + line.split()[2] for line in out.splitlines() if line.startswith("[cpu]")]
    assert order == ["plain#1", "mathpo#1", "plain#2", "mathpo#2", "plain#3", "mathpo#3"]
    assert started == ["mathpo"]  # one hf backend for the three mathpo repeats
    reps = f["mathpo"]["tokens_per_s_repeats"]
    assert len(reps) == 3 and f["mathpo"]["tokens_per_s"] == sorted(reps)[1]  # the median repeat's figures
    assert f["mathpo"]["same_tokens"] and f["plain"]["same_tokens"] and f["mathpo"]["tokens"] > 0
    lo, hi = f["mathpo_vs_plain_range"]
    assert lo <= f["mathpo_vs_plain"] <= hi and f["repeats"] == 3
