"""Sampling on a Ray cluster (`mathpo sample --ray`, the loop's `ray:`): a local cluster of 2 CPU
workers (`ray start --head` on 127.0.0.1, started here) gives the same rows as one process, a worker
killed mid-run costs no row, and the loop's step-pair rollouts give what they give in one process."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import DATA, needs_data
from mathpo import data, loop, prompts
from mathpo.cli import build_parser, main
from mathpo.commands import sample as sample_cmd
from mathpo.errors import UserError
from mathpo.records import read_jsonl, write_jsonl
from mathpo.sampling import SamplingParams, distributed_ray

# The test cluster takes a token of its own; Ray reads its auth settings once, at import, so they are
# set before it is imported (they concern Ray alone).
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
try:
    import ray
except ImportError:
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="the Ray tests need mathpo[ray]")

SAMPLE = ["--dataset", "gsm8k", "--data-dir", str(DATA), "--limit", "8", "--sample-dtype", "fp32",
          "--n", "2", "--max-new-tokens", "6"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loop_file(tmp_path, ray_section) -> str:
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump({"train_data": {"synth": {"n": 2}}, "out": str(tmp_path / "runs"),
                                    "ray": ray_section}))
    return str(path)


def test_ray_options_checked_and_missing_ray_names_the_extra(tmp_path, tiny_model_dir, monkeypatch, capsys):
    assert main(["loop", _loop_file(tmp_path, {"adress": "auto"})]) == 2
    assert "unknown ray option 'adress'" in capsys.readouterr().err
    assert main(["loop", _loop_file(tmp_path, {"workers": 0})]) == 2
    assert "ray.workers must be a positive integer" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    write_jsonl(tmp_path / "q.jsonl", [{"question": "1 + 1?", "answer": "2"}])
    code = main(["sample", "--model", str(tiny_model_dir), "--dataset", str(tmp_path / "q.jsonl"),
                 "--out", str(tmp_path / "out"), "--ray", "auto"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "mathpo sample: error: sampling on Ray needs Ray installed: pip install 'mathpo[ray]'"
    assert not (tmp_path / "out").exists()  # refused before anything was written
    assert main(["loop", _loop_file(tmp_path, {"address": "auto"})]) == 2
    assert "pip install 'mathpo[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """`ray start --head` with 2 CPUs in a subprocess (its own ports, temp dir and auth token);
    this process joins it as the driver. Stopped by signalling that one process (`--block`)."""
    temp = tmp_path_factory.mktemp("ray")
    port = _free_port()
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
           f"--temp-dir={temp}", f"--ray-client-server-port={_free_port()}", f"--dashboard-port={_free_port()}",
           f"--dashboard-agent-listen-port={_free_port()}"]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with open(temp / "head.log", "w") as log:
            head = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while "Ray runtime started" not in (temp / "head.log").read_text():
                assert head.poll() is None and time.time() < deadline, (temp / "head.log").read_text()[-2000:]
                time.sleep(0.5)
            yield address
        finally:
            if ray.is_initialized():
                ray.shutdown()
            head.send_signal(signal.SIGTERM)  # --block: it stops the processes it started
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                head.kill()


@pytest.fixture(scope="session")
def single_rows(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("single")
    assert main(["sample", "--model", str(tiny_model_dir), *SAMPLE, "--out", str(out)]) == 0
    return read_jsonl(out / "samples.jsonl")


@needs_data("gsm8k/test.jsonl")
@needs_ray
def test_ray_sample_matches_one_process_and_resumes(cluster, tiny_model_dir, single_rows, tmp_path, capsys):
    args = ["sample", "--model", str(tiny_model_dir), *SAMPLE, "--out", str(tmp_path), "--ray", cluster]
    assert main(args) == 0
    assert "ray: 2 hf workers (1 CPU, 0 GPU each)" in capsys.readouterr().out
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert [(r["id"], r["sample"]) for r in rows] == [(f"gsm8k-test-{i}", k) for i in range(8) for k in range(2)]
    assert rows == single_rows  # every field: the per-row random streams do not depend on the worker
    assert main(args) == 0  # a re-run finds every question done
    assert capsys.readouterr().out.splitlines()[-2].split()[1:3] == ["8", "0"]  # skipped 8, rows 0
    assert read_jsonl(tmp_path / "samples.jsonl") == single_rows


class KillAfterFirst:
    """The Ray backend, with one worker's process killed (SIGKILL) once the first question is back."""

    def __init__(self, backend):
        self.backend, self.name = backend, backend.name

    def generate_stream(self, prompts_, params):
        for k, item in enumerate(self.backend.generate_stream(prompts_, params)):
            if k == 0:
                os.kill(self.backend.pids[0], signal.SIGKILL)
            yield item


@needs_data("gsm8k/test.jsonl")
@needs_ray
def test_killed_worker_costs_no_row(cluster, tiny_model_dir, single_rows, tmp_path):
    argv = ["sample", "--model", str(tiny_model_dir), *SAMPLE]
    args = build_parser().parse_args(argv)
    cfg = args.options.resolve(args)
    settings = distributed_ray.settings({"address": cluster, "chunk": 1})  # 8 chunks: both workers busy
    loaded, backend = distributed_ray.start(settings, sample_cmd.load_backend, (cfg,), cfg["model"], "hf")
    records = data.load("gsm8k", "test", 8, DATA)
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=6)
    out = tmp_path / "samples.jsonl"
    stats = loop.sample_records(records, KillAfterFirst(backend), loaded.tokenizer, params, out, cfg["model"],
                           prompts.DEFAULT)
    assert backend.replaced == 1 and backend.retried >= 1  # the dead worker had a chunk in flight
    retried = backend.retried
    assert stats["rows_written"] == 16 and read_jsonl(out) == single_rows  # none lost, none doubled
    with pytest.raises(UserError, match="empty prompt"):  # a user error in a worker: one line, no retry
        backend.generate(["", "x"], params)
    assert backend.retried == retried
    backend.close()


def _without_seconds(stats):
    if isinstance(stats, dict):
        return {k: _without_seconds(v) for k, v in stats.items() if "seconds" not in k}
    return stats


@needs_ray
def test_loop_step_pairs_stage_on_ray(cluster, tiny_model_dir, tmp_path):
    """The loop's hook (its BackendCache, shared by its sample, step-pair and eval stages): rollouts of
    the step-pair stage run on the workers and give the rows and counts they give in one process."""
    from test_loop import tiny_config

    cfg = tiny_config(tmp_path, tiny_model_dir)
    cfg["step"]["pairs"] = {"rollouts": 2, "rectify_n": 2, "max_new_tokens": 8}
    # graded solutions with steps and a correct sibling, so the locator spends rollouts on each
    wrong = " 2 + 3 = 6.\nStep 2: So 6 apples.\nStep 3: The answer is 6."
    graded = [{"id": r["id"], "question": r["question"], "gold": "5", "sample": k, "correct": k == 1,
               "completion": wrong if k == 0 else " 2 + 3 = 5.\nStep 2: The answer is 5."}
              for r in read_jsonl(tmp_path / "train.jsonl")[:3] for k in range(2)]
    from mathpo.sampling import BackendSettings
    from mathpo.sampling.reuse import BackendCache

    results = {}
    for name, ray_cfg in (("one", None), ("ray", {"address": cluster})):
        d = tmp_path / name
        d.mkdir()
        held = BackendCache(BackendSettings(batch_size=cfg["batch_size"]), ray=ray_cfg)  # what the loop's Run holds
        stats = loop.step_pairs_stage({**cfg, "ray": ray_cfg}, held, str(tiny_model_dir), graded, d, None)
        held.release()  # as the loop does before training or at its end
        stats.pop("overheads")  # load and start-up times
        results[name] = (read_jsonl(d / "step.jsonl"), _without_seconds(stats))
    assert results["ray"] == results["one"]
    assert results["one"][1]["pairs"]["rollouts_total"] > 0
    deadline = time.time() + 60  # released, the workers end: the cluster's CPUs are free again
    while ray.available_resources().get("CPU", 0) < 2:
        assert time.time() < deadline, ray.available_resources()
        time.sleep(0.5)
