"""End to end on the real embedded SmolLM2-135M-Instruct (a handful of GSM8K questions)."""

import json

import pytest

from conftest import DATA, needs_data
from mathpo.cli import main

pytestmark = pytest.mark.real_model


@needs_data("gsm8k/test.jsonl")
def test_eval_embedded_model_on_gsm8k(tmp_path, smol_path, capsys):
    out = tmp_path / "ev"
    rc = main(["eval", "--model", "smollm2-135m-instruct", "--dataset", "gsm8k", "--limit", "4",
               "--data-dir", str(DATA), "--out", str(out), "max_new_tokens=48"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 4 and summary["model"] == "smollm2-135m-instruct"
    rows = [json.loads(s) for s in (out / "graded.jsonl").read_text().splitlines()]
    # the real model writes English about the question (a random model would not)
    assert sum(any(w in r["completion"].lower() for w in ("the", "step", "we")) for r in rows) >= 3
    printed = capsys.readouterr().out
    assert "model: smollm2-135m-instruct" in printed and "accuracy" in printed
