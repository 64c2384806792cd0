"""mathpo.data.files.read_file: the one table reader (datasets, `mathpo train --data`, pair files)
gives the same rows for every format it takes."""

import json

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest

from mathpo.data import files, load
from mathpo.errors import UserError
from mathpo.pairs.formats import load_pairs

# Text that no csv type inference turns into a number, and an int column that it must.
ROWS = [{"prompt": "1+1?", "chosen": "It is 2.", "rejected": "It is 3.", "gold": 2},
        {"prompt": "2+2?", "chosen": "It is 4.", "rejected": "It is 5.", "gold": 4}]


def write_all(tmp_path) -> dict:
    paths = {k: tmp_path / f"rows-{k}.{k.split('-')[0]}" for k in
             ("jsonl", "json-rows", "json-columns", "json-wrapped", "csv", "parquet")}
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    paths["json-rows"].write_text(json.dumps(ROWS))
    paths["json-columns"].write_text(json.dumps({k: [r[k] for r in ROWS] for k in ROWS[0]}))
    paths["json-wrapped"].write_text(json.dumps({"version": 1, "data": ROWS}))
    table = pa.Table.from_pylist(ROWS)
    pyarrow.csv.write_csv(table, paths["csv"])
    pyarrow.parquet.write_table(table, paths["parquet"])
    return paths


def test_every_format_reads_the_same_rows(tmp_path):
    paths = write_all(tmp_path)
    assert paths["csv"].read_text().startswith('"prompt","chosen"')  # a real csv, not JSON in disguise
    for kind, path in paths.items():
        assert files.read_file(path) == ROWS, kind


def test_the_three_callers_share_it(tmp_path):
    paths = write_all(tmp_path)
    from mathpo.training.rows import read_rows

    for path in paths.values():
        assert read_rows(str(path)) == ROWS
        kind, pairs = load_pairs(path)
        assert kind == "dpo" and [p.pop("id") for p in pairs] == ["1", "2"] and pairs == ROWS
        recs = load(str(path))
        assert [(r["question"], r["gold"]) for r in recs] == [("1+1?", "2"), ("2+2?", "4")]


@pytest.mark.parametrize("name,text,msg", [
    ("a.txt", "x", "unsupported file type '.txt'"),
    ("a.json", '{"a": [1, 2], "b": [1]}', "columns of different lengths"),
    ("a.json", '[1, 2]', "expected a list of objects or an object of columns"),
    ("a.json", '{"a": 1}', "expected a list of objects or an object of columns"),
    ("a.json", '[{"a": 1}', "malformed JSON"),
    ("a.jsonl", '{"a": 1}\n[2]\n', "a.jsonl:2: expected a JSON object"),
    ("a.csv", 'a,b\n1,2,3\n', "cannot read"),
    ("a.parquet", "not parquet", "cannot read"),
])
def test_bad_files_fail_in_one_line(tmp_path, name, text, msg):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=msg):
        files.read_file(tmp_path / name)


@pytest.mark.parametrize("suffix", files.SUFFIXES)
def test_missing_file(tmp_path, suffix):
    with pytest.raises(UserError, match="no such file"):
        files.read_file(tmp_path / f"none{suffix}")
