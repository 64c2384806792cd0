import json

import pytest

from mathpo.config import apply_overrides, load_yaml, parse_value
from mathpo.errors import UserError
from mathpo.records import JsonlAppender, read_jsonl, write_jsonl


def test_jsonl_roundtrip_and_atomic(tmp_path):
    p = tmp_path / "a.jsonl"
    write_jsonl(p, [{"id": "1", "x": "é"}, {"id": "2"}])
    assert read_jsonl(p) == [{"id": "1", "x": "é"}, {"id": "2"}]
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left


def test_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: malformed JSON"):
        read_jsonl(p)


def test_missing_field(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"id": 1}\n')
    with pytest.raises(UserError, match=r"m.jsonl:1: missing field\(s\) gold"):
        read_jsonl(p, required=("id", "gold"))


def test_appender_cuts_torn_tail(tmp_path):
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({"id": "a"}) + "\n" + '{"id": "b", "compl')  # killed mid-write
    out = JsonlAppender(p)
    assert out.rows() == [{"id": "a"}]
    out.append([{"id": "b"}])
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"]


def test_overrides():
    cfg = {"n": 1, "train": {"beta": 0.1}}
    apply_overrides(cfg, ["n=4", "train.beta=0.5", "stop=[a, b]", "name=x"])
    assert cfg == {"n": 4, "train": {"beta": 0.5}, "stop": ["a", "b"], "name": "x"}
    assert parse_value("true") is True and parse_value("null") is None and parse_value("[1, 2]") == [1, 2]
    # learning rates as people write them: floats (YAML 1.1 alone reads 1e-4 as a string)
    assert [parse_value(t) for t in ("1e-4", "5E-7", "-2e+3", "1.0e-4", "0.5", "3")] == [0.0001, 5e-07, -2000.0,
                                                                                         0.0001, 0.5, 3]
    assert isinstance(parse_value("3"), int) and parse_value("e5") == "e5" and parse_value("1.2.3e4") == "1.2.3e4"
    with pytest.raises(UserError, match="unknown option 'm'"):
        apply_overrides({}, ["m=1"], known={"n"})
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides({}, ["novalue"])


def test_yaml_files_read_exponent_floats(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("trl: {learning_rate: 5e-7, beta: 0.1, name: 1e-4x}\n")
    assert load_yaml(p) == {"trl": {"learning_rate": 5e-07, "beta": 0.1, "name": "1e-4x"}}
