"""One writer per run folder: `mathpo loop`, `sample` and `train` on a folder a live process holds exit 2
with one line naming the holder's pid; a lock left by a dead (SIGKILLed) process does not block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import cli_error
from mathpo import runlock
from mathpo.cli import main
from mathpo.records import write_jsonl

HOLDER = ("import sys, time\nfrom mathpo import runlock\nrunlock.hold(sys.argv[1], 'loop')\n"
          "print('held', flush=True)\ntime.sleep(120)\n")


@pytest.fixture
def holder(tmp_path):
    """A live process holding tmp_path/run; killed (SIGKILL) at the end if still alive."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait()


def _one_line_naming(capsys, pid: int) -> str:
    err = cli_error(capsys.readouterr().err)
    assert f"pid {pid}" in err
    return err


def test_second_writer_exits_2_naming_the_holder(holder, tmp_path, tiny_model_dir, capsys):
    folder, proc = holder
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, [{"id": "1", "question": "What is 2 + 3?", "answer": "5"}])
    config = tmp_path / "loop.yaml"
    config.write_text(f"name: run\nout: {tmp_path}\ntrain_data: {{synth: {{n: 4}}}}\n")
    assert main(["loop", str(config)]) == 2
    assert "(mathpo loop)" in _one_line_naming(capsys, proc.pid)
    assert main(["sample", "--model", str(tiny_model_dir), "--dataset", str(questions), "--template", "gsm8k",
                 "--out", str(folder)]) == 2
    _one_line_naming(capsys, proc.pid)
    assert main(["train", "--method", "sft", "--model", str(tiny_model_dir), "--data", str(questions),
                 "--out", str(folder)]) == 2
    _one_line_naming(capsys, proc.pid)
    assert not (folder / "samples.jsonl").exists() and not (folder / "config.json").exists()


def test_lock_of_a_dead_process_does_not_block(holder):
    folder, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (folder / runlock.LOCK_NAME).read_text().split()[0] == str(proc.pid)  # the stale file is still there
    path = runlock.hold(folder, "loop")
    assert path.read_text().split()[0] == str(os.getpid())
    assert runlock.hold(folder, "loop") == path  # asking again from the holder is a no-op
    runlock.release(folder)
