"""Full disk: a write that fails with ENOSPC leaves the previous file intact (whole-file writes and
appends alike) and the command exits 2 with one line. The disk is simulated: file objects whose
write() lets half the bytes through and then raises OSError(ENOSPC), or an fsync that does."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from conftest import cli_error
from mathpo import records
from mathpo.cli import main
from mathpo.errors import UserError
from mathpo.records import JsonlAppender, read_jsonl, write_jsonl


class HalfThenFull:
    """A file object whose write() gets half the data onto the disk, then the disk is full."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def full_appends(monkeypatch) -> None:
    """Appends (Path.open in "a" mode) hit a full disk."""
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, mode="r", *a, **kw: (
        HalfThenFull(real_open(self, mode, *a, **kw)) if "a" in mode else real_open(self, mode, *a, **kw)))


@pytest.fixture
def full_disk(monkeypatch):
    """Whole-file writes (os.fdopen of the temp file) and appends hit a full disk."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: HalfThenFull(real_fdopen(*a, **kw)))
    full_appends(monkeypatch)


def error_line(capsys) -> str:
    return cli_error(capsys.readouterr().err)


def _left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_whole_file_write_keeps_the_previous_file(tmp_path, full_disk):
    path = tmp_path / "graded.jsonl"
    path.write_text('{"id": "old"}\n')
    with pytest.raises(UserError, match="disk full; the previous file is unchanged"):
        write_jsonl(path, [{"id": "new"}] * 100)
    assert path.read_text() == '{"id": "old"}\n' and _left_over(tmp_path) == []


def test_append_cuts_its_partial_batch(tmp_path, monkeypatch):
    path = tmp_path / "samples.jsonl"
    log = JsonlAppender(path)
    log.append([{"id": "1", "sample": 0}])
    before = path.read_bytes()
    full_appends(monkeypatch)
    with pytest.raises(UserError, match="disk full"):
        log.append([{"id": "2", "sample": k} for k in range(50)])
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert JsonlAppender(path).rows() == [{"id": "1", "sample": 0}]


def test_fsync_failure_counts_as_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "DONE.json"
    path.write_text("{}\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records.os, "fsync", no_space)
    with pytest.raises(UserError, match="disk full"):
        records.write_json(path, {"stage": "x"})
    assert path.read_text() == "{}\n" and _left_over(tmp_path) == []


def test_grade_command_on_a_full_disk_exits_2_with_one_line(tmp_path, full_disk, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"id": "q", "completion": "#### 5", "gold": "5"}\n')
    dst.write_text("previous\n")
    assert main(["grade", str(src), "--output", str(dst)]) == 2
    err = error_line(capsys)
    assert "disk full" in err and str(dst) in err
    assert dst.read_text() == "previous\n" and _left_over(tmp_path) == []


def test_sample_command_on_a_full_disk_keeps_its_rows(tmp_path, tiny_model_dir, monkeypatch, capsys):
    questions = tmp_path / "q.jsonl"
    write_jsonl(questions, [{"id": str(i), "question": f"What is {i} + 3?", "answer": str(i + 3)} for i in range(3)])
    args = ["sample", "--model", str(tiny_model_dir), "--dataset", str(questions), "--template", "gsm8k",
            "--out", str(tmp_path / "s"), "--max-new-tokens", "4", "--n", "2"]
    assert main(args + ["--limit", "1"]) == 0
    samples = tmp_path / "s" / "samples.jsonl"
    before = samples.read_bytes()
    full_appends(monkeypatch)
    capsys.readouterr()
    assert main(args) == 2
    assert "disk full" in error_line(capsys)
    assert samples.read_bytes() == before and len(read_jsonl(samples)) == 2
    monkeypatch.undo()
    assert main(args) == 0 and len(read_jsonl(samples)) == 6  # freed: the same command resumes


def test_other_disk_full_errors_exit_2_with_one_line(monkeypatch, capsys):
    from mathpo.commands import grade

    def save_fails(args):  # e.g. torch.save of a checkpoint, which does not go through mathpo.records
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoints/checkpoint-1/model.safetensors")

    monkeypatch.setattr(grade, "run", save_fails)
    assert main(["grade", "in.jsonl", "--output", "out.jsonl"]) == 2
    assert "disk full writing runs/x/checkpoints" in error_line(capsys)


def test_a_checkpoint_cut_short_by_a_full_disk_exits_2_with_one_line(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """torch.save's zip writer reports the short write as RuntimeError; with the disk nearly full it is
    the one-line disk-full error, and with space left the same error is not disguised as one."""
    import shutil
    from collections import namedtuple

    import trl

    rows = tmp_path / "rows.jsonl"
    write_jsonl(rows, [{"prompt": "Question: 1 + 1?\nAnswer:", "completion": " 2\n#### 2"}] * 4)
    args = ["train", "--method", "sft", "--model", str(tiny_model_dir), "--data", str(rows),
            "--out", str(tmp_path / "t"), "max_steps=1"]

    def torn_save(self, *a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 693743040 vs 693742932")

    monkeypatch.setattr(trl.SFTTrainer, "train", torn_save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 100, 220 << 10))
    capsys.readouterr()
    assert main(args) == 2
    err = error_line(capsys)
    assert "disk full" in err and str(tmp_path / "t") in err
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 0, 50 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        main(args + ["--resume"])
