"""mathpo.allocator: the commands that sample or train re-execute under TCMalloc where the system has
it, once, and only they; MATHPO_MALLOC=system keeps the system's allocator; train_config.yaml says which ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from mathpo import allocator


def test_preload_env_adds_the_library_once_and_keeps_other_preloads(tmp_path):
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    env = allocator.preload_env({"MATHPO_MALLOC": str(lib), "LD_PRELOAD": "/x/libother.so"})
    assert env["LD_PRELOAD"] == f"{lib} /x/libother.so"
    assert allocator.preload_env(env) is None  # already preloaded: nothing to add
    assert allocator.preload_env({"MATHPO_MALLOC": "system"}) is None
    assert allocator.preload_env({"MATHPO_MALLOC": str(tmp_path / "missing.so")}) is None


def test_only_sampling_and_training_commands_reexecute(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "reexec", calls.append)
    out = str(tmp_path / "s.jsonl")
    monkeypatch.setattr(sys, "argv", ["mathpo", "data", "synth", "--split", "train", "--n", "1", "--out", out])
    from mathpo import cli

    with pytest.raises(SystemExit):
        cli.entry()
    assert calls == []  # `train` here is a value, not the command
    monkeypatch.setattr(sys, "argv", ["mathpo", "serve", "--help"])
    with pytest.raises(SystemExit):
        cli.entry()
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["mathpo", "--log-level", "info", "loop", "--help"])
    with pytest.raises(SystemExit):
        cli.entry()
    assert calls == [["--log-level", "info", "loop", "--help"]]


@pytest.mark.parametrize("setting", ["auto", "system"])
def test_train_records_the_allocator_it_ran_on(setting, tmp_path, tiny_model_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "1 + 1 =", "completion": " 2"}) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.DONE)}
    r = subprocess.run([sys.executable, "-m", "mathpo.cli", "train", "--method", "sft", "--model", str(tiny_model_dir),
                        "--data", str(data), "--out", str(tmp_path / "out"), "max_steps=1", "report_to=[]"],
                       capture_output=True, text=True, timeout=300, env={**env, "MATHPO_MALLOC": setting})
    assert r.returncode == 0, r.stderr[-2000:]
    ran = yaml.safe_load((tmp_path / "out" / "train_config.yaml").read_text())["allocator"]
    expected = allocator.library("auto") if setting == "auto" else None
    if expected is None:
        assert ran == "system"
    else:
        assert "tcmalloc" in ran and os.path.realpath(ran) == os.path.realpath(expected)
