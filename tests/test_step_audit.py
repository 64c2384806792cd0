"""The hand audit of Step-DPO pairs (issue #16): 30 pairs drawn at random (seed 0) from the 65 that
`mathpo pairs --kind step` built from the demo's RFT-SFT model on 160 synthetic training questions
(4 samples each, 4 rollouts per prefix, the calculator on), each read by hand and recorded in
tests/fixtures/step_audit.jsonl with two verdicts: is `rejected` the first wrong step, and is
`chosen` a correct next step. Read 2026-12-01: 29/30 and 28/30. The one bad rejected step makes
the same calculation as its chosen step, with the same false label; the two bad chosen steps have
the right number with the wrong unit (`86 / 2 = <<86/2=43>>43 pages` for 43 chapters), which
no arithmetic check can see. These tests hold the pairs to what the audit relied on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mathpo.pairs.arithmetic import error
from mathpo.pairs.split import split

ROWS = [json.loads(line) for line in (Path(__file__).parent / "fixtures/step_audit.jsonl").read_text().splitlines()]
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


def test_the_audit_is_complete():
    assert len(ROWS) == 30 and len({r["id"] for r in ROWS}) == 30
    assert all(isinstance(r["rejected_is_first_wrong_step"], bool) for r in ROWS)
    assert all(isinstance(r["chosen_is_correct_next_step"], bool) for r in ROWS)
    # every negative verdict says why
    assert all(r["note"] for r in ROWS if not (r["rejected_is_first_wrong_step"] and r["chosen_is_correct_next_step"]))


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_pair_is_one_step_after_a_shared_prefix(row):
    """chosen and rejected are each exactly the first step of their full solutions after the prefix."""
    for step, full in ((row["chosen"], row["full_chosen"]), (row["rejected"], row["full_rejected"])):
        assert full.startswith(step)
        assert split(full, "lines")[0].text == step
    if row["prefix"]:
        assert row["prefix"].endswith("\n")


@pytest.mark.parametrize("row", ROWS, ids=[r["id"] for r in ROWS])
def test_chosen_steps_pass_their_own_arithmetic(row):
    """None of the audited chosen steps writes a number its annotation does not compute (the demo's
    `16 - 8 = <<16-8=8>>16` kind, which the arithmetic check now removes); the two the audit
    rejected are unit errors, which pass this check: the audit, not the check, found them."""
    assert error(row["chosen"]) is None


def test_same_calculation_pairs_are_the_ones_the_audit_flagged():
    """Pairs whose chosen and rejected steps make the same calculations: the audit's one bad
    rejected step is among them, the rest are label errors (`32 rows` for 32 marbles)."""
    same = {r["draw"] for r in ROWS if ANNOTATION.findall(r["chosen"]) == ANNOTATION.findall(r["rejected"])}
    bad = {r["draw"] for r in ROWS if not r["rejected_is_first_wrong_step"]}
    assert bad <= same and len(same) == 4
