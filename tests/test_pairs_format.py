"""Pairs keep one answer format: a reference solution written as a positive uses the format the
question's samples use (the rows' template when they name one, else `#### N` vs `\\boxed{}` read from
the samples), so chosen and rejected never differ by format alone."""

from __future__ import annotations

import re

from mathpo.cli import main
from mathpo.pairs import dpo, rft
from mathpo.pairs.pool import detect_format
from mathpo.records import read_jsonl, write_jsonl


def _rows(qid, question, gold, solution, completions):
    return [{"id": qid, "sample": k, "question": question, "gold": gold, "solution": solution,
             "prompt": f"Question: {question}\nAnswer:", "completion": c, "correct": ok}
            for k, (c, ok) in enumerate(completions)]


# A file from another tool: GSM8K-style samples, no `template` field.
GSM8K_FILE = (
    _rows("g1", "Tom has 4 boxes of 6 pens. How many pens?", "24", "4 * 6 = <<4*6=24>>24\n#### 24",
          [(" He has 4 + 6 = 10 pens.\n#### 10", False), (" 4 + 7 = 11 pens.\n#### 11", False)])
    + _rows("g2", "Ann reads 3 pages a day for 5 days. How many pages?", "15", "3 * 5 = <<3*5=15>>15\n#### 15",
            [(" 3 * 5 = 15 pages.\n#### 15", True), (" 3 + 5 = 8 pages.\n#### 8", False)]))

# MATH-style samples and a solution with an inline box, no `template` field.
MATH_FILE = (
    _rows("m1", "What is $\\frac{1}{2} + \\frac{1}{4}$?", "\\frac{3}{4}",
          "We have $\\frac{1}{2} + \\frac{1}{4} = \\frac{2}{4} + \\frac{1}{4} = \\boxed{\\frac{3}{4}}$.",
          [(" Adding gives $\\frac{2}{6}$, so the answer is $\\boxed{\\frac{1}{3}}$.", False),
           (" The sum is $\\boxed{\\frac{2}{4}}$.", False)])
    + _rows("m2", "Solve $2x = 8$.", "4", "Dividing by 2, $x = 4$.",
            [(" $x = 8 - 2 = \\boxed{6}$", False), (" $x = \\boxed{4}$", True)]))


def _marker(text: str) -> str:
    return "hashes" if re.search(r"\n#### \S+$", text) else "boxed" if "\\boxed{" in text else "none"


def _run_pairs(tmp_path, rows, kind, *extra):
    src, out = tmp_path / "graded.jsonl", tmp_path / f"{kind}.jsonl"
    write_jsonl(src, rows)
    assert main(["pairs", "--kind", kind, "--input", str(src), "--output", str(out), *extra]) == 0
    return read_jsonl(out)


def test_gsm8k_style_file_without_template(tmp_path):
    # the default template (chat-boxed) would have written the reference as \boxed{24}
    pairs = _run_pairs(tmp_path, GSM8K_FILE, "dpo")
    refs = [p for p in pairs if "<<4*6=24>>" in p["chosen"]]
    assert refs and all(p["chosen"].endswith("\n#### 24") for p in refs)
    assert all(_marker(p["chosen"]) == _marker(p["rejected"]) == "hashes" for p in pairs)
    sft = _run_pairs(tmp_path, GSM8K_FILE, "rft", "cap_percentile=100")
    assert {_marker(r["completion"]) for r in sft} == {"hashes"} and len(sft) == 3


def test_math_style_file_without_template(tmp_path):
    # asked for plain `Question:/Answer:` prompts (a hashes template), the samples still answer in boxes
    pairs = _run_pairs(tmp_path, MATH_FILE, "dpo", "--template", "gsm8k")
    assert pairs and all(_marker(p["chosen"]) == _marker(p["rejected"]) == "boxed" for p in pairs)
    m2 = [p["chosen"] for p in pairs if p["id"] == "m2" and "Dividing" in p["chosen"]]
    assert m2 and m2[0].endswith("The final answer is $\\boxed{4}$.")
    sft = _run_pairs(tmp_path, MATH_FILE, "rft", "--template", "gsm8k", "cap_percentile=100")
    assert all("####" not in r["completion"] for r in sft) and len(sft) == 3


def test_rows_template_wins_and_detection_falls_back_to_the_file():
    named = [{**r, "template": "chat-boxed"} for r in GSM8K_FILE]
    pairs, _ = dpo.build(named, None, "gsm8k")
    assert any(p["chosen"].endswith("\\boxed{24}$.") for p in pairs)
    # a question whose samples carry no marker takes the format of the rest of the file
    silent = _rows("g3", "Sam has 2 bags of 9 nuts. How many nuts?", "18", "2 * 9 = <<2*9=18>>18\n#### 18",
                   [(" He has 11 nuts", False)])
    rows, _ = rft.build(GSM8K_FILE + silent, None, "chat-boxed", cap_percentile=100)
    assert [r["completion"] for r in rows if r["id"] == "g3"][0].endswith("\n#### 18")
    assert detect_format(["#### 1", "\\boxed{2}"]) is None and detect_format([]) is None
    assert detect_format(["#### 1", "#### 3\n\nQuestion: x \\boxed{2}", "\\boxed{2}"]) == "hashes"
