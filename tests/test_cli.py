"""The commands end to end on a tiny model, and every bad input exits 2 with one line."""

import json
import subprocess
import sys

import pytest

from conftest import DATA, needs_data
from mathpo.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mathpo.cli", *args], capture_output=True, text=True, cwd=cwd)


@needs_data("gsm8k/test.jsonl")
def test_eval_tiny_model(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--model", str(tiny_model_dir), "--dataset", "gsm8k", "--limit", "3",
               "--data-dir", str(DATA), "--out", str(out), "max_new_tokens=8"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["accuracy"] == 0.0 and summary["sampling"]["max_new_tokens"] == 8
    rows = [json.loads(s) for s in (out / "graded.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert all({"pred", "correct", "strict_correct", "prompt", "completion"} <= set(r) for r in rows)
    assert "accuracy" in capsys.readouterr().out
    assert (out / "config.yaml").is_file()


@needs_data("gsm8k/test.jsonl")
def test_sample_resumes_without_duplicates(tmp_path, tiny_model_dir):
    out = tmp_path / "s"
    args = ["sample", "--model", str(tiny_model_dir), "--dataset", "gsm8k", "--data-dir", str(DATA),
            "--out", str(out), "--n", "2", "max_new_tokens=4"]
    assert main(args + ["--limit", "2"]) == 0
    first = (out / "samples.jsonl").read_text().splitlines()
    assert len(first) == 4
    assert main(args + ["--limit", "3"]) == 0  # the first 2 questions are skipped, the third added
    rows = [json.loads(s) for s in (out / "samples.jsonl").read_text().splitlines()]
    assert (out / "samples.jsonl").read_text().splitlines()[:4] == first
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted(
        (f"gsm8k-test-{i}", k) for i in range(3) for k in range(2))
    # other settings into the same file are refused, nothing appended
    assert main(args + ["--limit", "3", "--seed", "5"]) == 2
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6


@pytest.mark.parametrize("args,msg", [
    (["eval", "--dataset", "/no/file.jsonl"], "no such file"),
    (["eval", "--dataset", "nope"], "unknown dataset"),
    (["eval", "--dataset", "gsm8k", "--limit", "0"], "--limit must be positive"),
    (["eval", "--dataset", "gsm8k", "--model", "no-such-model"], "unknown model"),
    (["eval", "--dataset", "gsm8k", "--template", "nope"], "unknown template"),
    (["eval", "--dataset", "gsm8k", "bogus=1"], "unknown option 'bogus'"),
    (["grade", "/no/rows.jsonl", "--output", "x.jsonl"], "no such file"),
])
def test_bad_inputs_exit_2_one_line(tmp_path, args, msg):
    r = run_cli(*args, "--data-dir", str(DATA), cwd=tmp_path) if args[0] == "eval" else run_cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_malformed_and_empty_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion": "1", "gold": "1"}\nnot json\n')
    r = run_cli("grade", str(bad), "--output", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and f"{bad}:2: malformed JSON" in r.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = run_cli("eval", "--dataset", str(empty), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "no rows" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl"]
