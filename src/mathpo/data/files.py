"""Read a table file into rows, unchanged: the one reader behind `mathpo.data.load` (datasets),
`mathpo train --data FILE` and `pairs.formats.load_pairs` (pair files).

Formats, by suffix:
- `.jsonl`: one object per line;
- `.json`: a list of objects, an object of columns (`{"prompt": [...], "chosen": [...]}`, as
  `Dataset.to_dict()` writes), or an object with exactly one list of objects (`{"data": [...]}`);
- `.csv`, `.parquet`: through pyarrow (types inferred for csv; no dataset cache is written).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..records import read_json, read_jsonl

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def read_file(path: str | Path) -> list[dict]:
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"{path}: unsupported file type '{suffix}' ({', '.join(s[1:] for s in SUFFIXES)})")
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        return _json_rows(read_json(path), path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    import pyarrow

    try:
        if suffix == ".csv":
            import pyarrow.csv

            table = pyarrow.csv.read_csv(path)
        else:
            import pyarrow.parquet

            table = pyarrow.parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as e:
        raise UserError(f"{path}: cannot read ({str(e).splitlines()[0]})") from None
    return table.to_pylist()


def _json_rows(data, path: Path) -> list[dict]:
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1 and lists[0] and all(isinstance(r, dict) for r in lists[0]):
            data = lists[0]  # {"data": [...]} and similar single-list wrappers
        elif data and len(lists) == len(data):  # columns
            if len({len(v) for v in lists}) != 1:
                raise UserError(f"{path}: columns of different lengths")
            data = [dict(zip(data, values)) for values in zip(*lists)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a list of objects or an object of columns")
    return data
