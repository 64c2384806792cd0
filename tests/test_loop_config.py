"""`mathpo loop` settings (mathpo.loop_config): typed sections, the free-form sections checked at
load time (TRL fields, LoRA fields, step-pair options), fast enough to fail before any work."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathpo import train_options
from mathpo.errors import UserError
from mathpo.loop_config import load, load_config

REPO = Path(__file__).resolve().parents[1]
BASE = {"train_data": {"synth": {"n": 5}}}


def test_misspelt_trl_key_fails_in_one_line_in_under_two_seconds(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("train_data: {synth: {n: 3}}\ndpo: {overrides: {learnin_rate: 1.0e-5}}\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mathpo.cli", "loop", str(path)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=60)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the child: on a shared, loaded machine wall time measures the neighbours
    # (about 0.6 s wall when the machine is quiet); torch or TRL imported would cost 3+ s of CPU
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "dpo.overrides.learnin_rate" in lines[0] and "learning_rate" in lines[0], lines
    assert "DPOConfig" in lines[0]
    assert seconds < 2, f"{seconds:.2f} s of CPU ({wall:.2f} s wall)"


@pytest.mark.parametrize("override, message", [
    ("sft.overrides.num_train_epoch=2",
     "sft.overrides.num_train_epoch' for TRL's SFTConfig (did you mean num_train_epochs"),
    ("warmup_sft.overrides.beta=0.1", "warmup_sft.overrides.beta' for TRL's SFTConfig"),  # a DPO field
    ("step.pairs.rolouts=4", "unknown step-pair option 'step.pairs.rolouts' (did you mean rollouts"),
    ("step.pairs.rollouts=0", "step.pairs.rollouts"),
    ("step.pairs.locator=judge", "step.pairs.locator judge needs step.pairs.judge_url"),
    ("dpo.peft.rank=8", "unknown LoRA option 'dpo.peft.rank' for PEFT's LoraConfig"),
    ("dpo.overrides.peft={r: 8}", "dpo.overrides.peft: mathpo's LoRA settings go in dpo.peft"),
    ("sample.n=many", "loop option 'sample.n' must be int"),
    ("dpo.tresh=0.5", "unknown loop option 'dpo.tresh' (did you mean threshold"),
])
def test_free_form_sections_are_checked_at_load(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("'", "'")):
        load_config(None, [override], data=BASE)


def test_recipe_and_arms_together_are_refused():
    # arms replace the recipe: a recipe next to them (or recipe=... on a config with arms) would
    # otherwise be silently ignored
    with pytest.raises(UserError, match="either recipe .* or arms"):
        load_config(None, ["recipe=st"], data={**BASE, "arms": {"a": ["st"]}})
    assert load(None, [], data={**BASE, "arms": {"a": ["st"]}}).arms == {"a": ["st"]}
    assert load(None, ["arms={}", "recipe=st"], data={**BASE, "arms": {"a": ["st"]}}).recipe == ["st"]


def test_valid_free_form_keys_and_typed_sections():
    cfg = load(None, ["dpo.overrides.beta=0.2", "step.overrides.gradient_checkpointing=true", "dpo.peft.r=8",
                      "step.pairs.locator=judge", "step.pairs.judge_url=http://x/v1", "step.pairs.judge_model=m",
                      "warmup_sft.overrides.learning_rate=1e-4"], data=BASE)
    assert cfg.dpo.overrides == {"beta": 0.2} and cfg.dpo.peft == {"r": 8} and cfg.sample.n == 4
    assert cfg.as_dict()["step"]["pairs"]["locator"] == "judge"
    from mathpo.loop_config import step_pair_options

    opts = step_pair_options(cfg.as_dict())
    assert opts.seed == cfg.seed and opts.judge().model == "m"  # the judge is set up from the config


def test_field_names_from_source_match_the_real_classes():
    # the fast (no-import) reading of TRL / PEFT source must give exactly the dataclass fields
    for module, name in [*train_options.TRL_CONFIGS.values(), train_options.LORA_CONFIG]:
        assert train_options._ast_fields(module, name) == train_options._imported_fields(module, name), name
