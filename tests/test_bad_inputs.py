"""Bad inputs through the CLI, as a new user makes them: every one exits 2 with exactly one line on
stderr naming the problem, never a traceback, and writes no output. (`python -m pytest -q -s
tests/test_bad_inputs.py` prints the count; the README's reliability table quotes it.)"""

from __future__ import annotations

import json

import pytest

from conftest import cli_error
from mathpo.cli import main
from mathpo.records import write_jsonl

GRADED = {"id": "q", "sample": 0, "question": "2 + 3?", "completion": "#### 5", "gold": "5", "correct": True}


def _files(d):
    """Input files, good and bad, under d."""
    (d / "malformed.jsonl").write_text('{"id": "1", "completion": "#### 5", "gold": "5"}\n{"id": "2", oops\n')
    (d / "torn.jsonl").write_text('{"id": "1", "completion": "#### 5", "gold": "5"}\n{"id": "2", "compl')
    (d / "torn_graded.jsonl").write_text(json.dumps(GRADED) + '\n{"id": "q", "sample": 1, "ques')
    (d / "list.jsonl").write_text("[1, 2]\n")
    (d / "empty.jsonl").write_text("")
    (d / "bad.yaml").write_text("train_data: {synth: {n: 3}\n")
    (d / "notamap.yaml").write_text("- a\n- b\n")
    write_jsonl(d / "nogold.jsonl", [{"id": "1", "completion": "#### 5"}])
    write_jsonl(d / "ungraded.jsonl", [{k: v for k, v in GRADED.items() if k != "correct"}])
    write_jsonl(d / "graded.jsonl", [GRADED])
    write_jsonl(d / "noprompt.jsonl", [GRADED])
    write_jsonl(d / "noquestion.jsonl", [{"id": "1", "text": "2 + 3?", "answer": "5"}])
    write_jsonl(d / "notpairs.jsonl", [{"id": "1", "foo": "bar"}])
    (d / "loop.yaml").write_text("train_data: {synth: {n: 3}}\n")


def cases(d, model):
    loop = str(d / "loop.yaml")
    sample = ["sample", "--model", model, "--template", "gsm8k", "--out", str(d / "out")]
    train = ["train", "--model", model, "--out", str(d / "out")]
    return [
        # grade
        (["grade", str(d / "missing.jsonl"), "--output", str(d / "out.jsonl")], "no such file"),
        (["grade", str(d / "malformed.jsonl"), "--output", str(d / "out.jsonl")], "malformed.jsonl:2: malformed JSON"),
        (["grade", str(d / "torn.jsonl"), "--output", str(d / "out.jsonl")], "torn.jsonl:2: malformed JSON"),
        (["grade", str(d / "list.jsonl"), "--output", str(d / "out.jsonl")], "expected a JSON object"),
        (["grade", str(d / "nogold.jsonl"), "--output", str(d / "out.jsonl")], "missing field(s) gold"),
        (["grade", str(d / "empty.jsonl"), "--output", str(d / "out.jsonl")], "no rows"),
        (["grade", str(d / "graded.jsonl"), "--output", str(d / "out.jsonl"), "--workers", "0"], "--workers"),
        (["grade", str(d / "graded.jsonl"), "--output", str(d / "out.jsonl"), "--timeout", "-1"], "--timeout"),
        # pairs
        (["pairs", "--input", str(d / "graded.jsonl"), "--output", str(d / "out.jsonl")], "--kind is required"),
        (["pairs", "--kind", "dpo", "--input", str(d / "ungraded.jsonl"), "--output", str(d / "out.jsonl")],
         "mathpo grade"),
        (["pairs", "--kind", "dpo", "--input", str(d / "missing.jsonl"), "--output", str(d / "out.jsonl")],
         "no such file"),
        (["pairs", "--kind", "dpo", "--input", str(d / "graded.jsonl"), "--output", str(d / "out.jsonl"),
          "--template", "nope"], "unknown template"),
        (["pairs", "--kind", "dpo", "--input", str(d / "noprompt.jsonl"), "--output", str(d / "out.jsonl")],
         "pass --model"),
        (["pairs", "--kind", "dpo", "--input", str(d / "torn_graded.jsonl"), "--output", str(d / "out.jsonl")],
         "torn_graded.jsonl:2: malformed JSON"),
        # sample
        (sample + ["--dataset", "nope"], "unknown dataset"),
        (sample + ["--dataset", str(d / "missing.jsonl")], "no such file"),
        (sample + ["--dataset", str(d / "empty.jsonl")], "no rows"),
        (sample + ["--dataset", str(d / "malformed.jsonl")], "malformed JSON"),
        (sample + ["--dataset", str(d / "graded.jsonl"), "--limit", "0"], "--limit must be positive"),
        (sample + ["--dataset", str(d / "graded.jsonl"), "bogus=1"], "unknown option 'bogus'"),
        (["sample", "--model", "no-such-model", "--dataset", str(d / "graded.jsonl"), "--out", str(d / "out")],
         "unknown model"),
        (sample[:4] + ["nope"] + sample[5:] + ["--dataset", str(d / "graded.jsonl")], "unknown template"),
        (sample + ["--dataset", str(d / "graded.jsonl"), "vllm_args.max_num_seqs=8"], "the hf backend takes none"),
        (sample + ["--dataset", str(d / "graded.jsonl"), "--vllm-args", "[1, 2]"], "vllm_args must be a mapping"),
        # train
        (train + ["--data", str(d / "graded.jsonl")], "--method is required"),
        (train + ["--method", "dpo"], "--data is required"),
        (train + ["--method", "dpo", "--data", str(d / "missing.jsonl")], "no such file"),
        (train + ["--method", "dpo", "--data", str(d / "notpairs.jsonl")], "field 'chosen' must be"),
        (["train", "--method", "sft", "--model", "no-such-model", "--data", str(d / "graded.jsonl"),
          "--out", str(d / "out")], "unknown model"),
        # eval
        (["eval", "--model", model, "--dataset", str(d / "missing.jsonl"), "--out", str(d / "out")], "no such file"),
        (["eval", "--model", model, "--dataset", str(d / "noquestion.jsonl"), "--out", str(d / "out")], "question"),
        # loop
        (["loop", str(d / "missing.yaml")], "no such config file"),
        (["loop", str(d / "bad.yaml")], "bad.yaml"),
        (["loop", str(d / "notamap.yaml")], "notamap.yaml"),
        (["loop", loop, "bogus=1"], "unknown loop option 'bogus'"),
        (["loop", loop, "recipe=grpo"], "unknown recipe"),
        (["loop", loop, "iterations=-1"], "iterations"),
        (["loop", loop, "rft.pool=some"], "rft.pool"),
        (["loop", loop, "sft.restart=never"], "sft.restart"),
        (["loop", loop, "eval.after=[nope]"], "eval.after"),
        (["loop", loop, "curriculum.min_pass=0.9", "curriculum.max_pass=0.1"], "curriculum"),
        (["loop", loop, "template=nope"], "unknown template"),
        (["loop", loop, "vllm_args.max_num_seqs=8"], "the hf backend takes none"),
        (["loop", loop, "train_data={dataset: gsm8k, spilt: train}"], "did you mean split"),
        (["loop", loop, "test_sets.g=gsm8k"], "test_sets.g must be a data spec"),
        (["loop", loop, "dpo.k=0"], "dpo.k must be >= 1"),
        (["loop", loop, "sample.questions=-1"], "sample.questions must be a positive number"),
        (["loop", loop, "warmup_sft.lora=true", "warmup_sft.merge_lora=false"], "merge_lora: false is not supported"),
        (["loop", str(d / "empty.jsonl")], "train_data is required"),
    ]


def test_every_bad_input_exits_2_with_one_line(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    _files(inputs)
    failures, table = [], cases(inputs, str(tiny_model_dir))
    for args, msg in table:
        rc = main(args)
        err = capsys.readouterr().err
        try:
            ok = rc == 2 and msg in cli_error(err)
        except AssertionError:
            ok = False
        if not ok:
            failures.append((args, rc, err[-500:]))
    assert not failures, json.dumps(failures, indent=1)
    assert not (inputs / "out").exists() and not (inputs / "out.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written anywhere else either
    print(json.dumps({"bad_inputs": len(table), "exit_2_one_line": len(table) - len(failures)}))


@pytest.mark.parametrize("damage", ["torn_tail", "torn_done"])
def test_damaged_run_folder_is_repaired_or_named(tmp_path, damage, capsys):
    """A torn DONE.json is repaired (the stage is redone); a torn row file is named in one line."""
    config = tmp_path / "loop.yaml"
    config.write_text(f"name: r\nout: {tmp_path}\ntrain_data: {{synth: {{n: 3}}}}\niterations: 0\n"
                      "warmup_sft: {enabled: false}\neval: {after: []}\n")
    assert main(["loop", str(config)]) == 0
    data = tmp_path / "r" / "data"
    if damage == "torn_done":
        done = (data / "DONE.json").read_text()
        (data / "DONE.json").write_text(done[: len(done) // 2])
        assert main(["loop", str(config)]) == 0
        assert "DONE.json: malformed JSON" in capsys.readouterr().out and json.loads((data / "DONE.json").read_text())
    else:
        rows = (data / "train.jsonl").read_text()
        (data / "train.jsonl").write_text(rows[: len(rows) - 20])
        capsys.readouterr()
        assert main(["loop", str(config)]) == 2
        assert "train.jsonl:3: malformed JSON" in cli_error(capsys.readouterr().err)
