"""`mathpo sample` data-parallel: 2 processes under torchrun on CPU give the same rows as one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import DATA, needs_data
from mathpo.cli import main


@needs_data("gsm8k/test.jsonl")
def test_two_process_shards_merge_to_single_process_rows(tmp_path, tiny_model_dir):
    torchrun = Path(sys.executable).with_name("torchrun")
    assert torchrun.exists() or shutil.which("torchrun")
    args = ["sample", "--model", str(tiny_model_dir), "--dataset", "gsm8k", "--data-dir", str(DATA),
            "--limit", "5", "--sample-dtype", "fp32", "n=2", "max_new_tokens=4"]  # torchrun claims --n
    assert main(args + ["--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--standalone", "--nproc_per_node", "2",
           "-m", "mathpo.cli", *args, "--out", str(tmp_path / "two")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "merged 2 shards: 10 rows" in r.stdout
    shards = [tmp_path / "two" / f"samples.rank{k}-of-2.jsonl" for k in range(2)]
    assert [len(p.read_text().splitlines()) for p in shards] == [6, 4]  # questions 0,2,4 and 1,3
    one = [json.loads(line) for line in (tmp_path / "one" / "samples.jsonl").read_text().splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"]) for r in two] == [(f"gsm8k-test-{i}", k) for i in range(5) for k in range(2)]
    assert [r["completion"] for r in two] == [r["completion"] for r in one]  # per-row random streams
    # re-running the same launch resumes every shard (nothing left to do) and merges again
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and (tmp_path / "two" / "samples.jsonl").read_text().count("\n") == 10
