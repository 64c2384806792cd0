"""A chosen step's own arithmetic (`pairs.arithmetic`): literal steps, good and bad, and GSM8K's own."""

import json

import pytest

from conftest import DATA
from mathpo.pairs.arithmetic import error
from mathpo.pairs.split import split

# the demo's chosen step: its rollout reached the gold answer, yet it writes 16 where it computed 8
DEMO_BAD = "She has 16 - 8 = <<16-8=8>>16 balloons left.\n"


@pytest.mark.parametrize("step", [
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n",  # GSM8K train, verbatim
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n",
    "She has 16 - 8 = <<16-8=8>>8 balloons left.\n",
    "He pays 2 * 500 = $<<2*500=1000>>1,000 in total.",  # $ before the annotation, thousands comma
    "That is <<2*500=1,000>>$1,000.",  # comma in the result, $ in the repeat, sentence full stop
    "So <<$16-$8=$8>>$8 is left.",  # dollars inside the annotation
    "<<16-8=8.0>>8 and <<16-8=8>>8.0",  # trailing .0 either side
    "<<10/3=3.33>>3.33 each",  # rounded to what it shows
    "<<10/3=3.3>>3.3 each",
    "A mosquito sucks 20 / 5000 = <<20/5000=.004>>.004 L",  # GSM8K train: more decimals than the calculator prints
    "<<2/3=0.6666666667>>0.67",
    "<<7/2=3.5>>3.5 then <<5-8=-3>>-3",  # several annotations, a negative result
    "She eats 3 eggs, 16 - 3 = 13.\n",  # no annotation: nothing to check
    "",
])
def test_sound_steps_pass(step):
    assert error(step) is None


@pytest.mark.parametrize("step,why", [
    (DEMO_BAD, "wrong_repeat"),
    ("<<16-8=8>>9 left, <<2*3=6>>6", "wrong_repeat"),
    ("<<1000*2=2000>>2,00 dollars", "wrong_repeat"),  # not a thousands comma: reads 2
    ("<<48/2=24>>2.4 clips", "wrong_repeat"),
    ("<<16-8=9>>9 balloons", "wrong_result"),  # repeats itself, but 16-8 is not 9
    ("<<48/2=24>>24 and <<48+24=70>>70", "wrong_result"),  # the second annotation is wrong
    ("<<10/3=3>>3", "wrong_result"),  # an integer claims exactness
    ("<<10/3=3.34>>3.34", "wrong_result"),
    ("<<16-8=8.01>>8.01", "wrong_result"),
    ("<<16-8=eight>>8", "wrong_result"),
    ("<<16-8=8>> balloons left", "no_repeat"),
    ("<<16-8=8>>", "no_repeat"),
    ("<<16-8>>8", "malformed"),
    ("She has <<16-8=8 balloons", "malformed"),
    ("<<x+1=3>>3", "unevaluable"),
    ("<<__import__('os')=0>>0", "unevaluable"),  # model text is data: refused, never run
    ("<<1) + (2=2>>2", "unevaluable"),  # not an expression on its own, whatever wraps it
])
def test_bad_steps_are_named(step, why):
    assert error(step) == why


@pytest.mark.skipif(not (DATA / "gsm8k" / "test.jsonl").is_file(), reason="no ../shared/data")
def test_gsm8k_test_reference_lines_pass():
    with (DATA / "gsm8k" / "test.jsonl").open(encoding="utf-8") as f:
        lines = [s.body for line in f if line.strip() for s in split(json.loads(line)["answer"], "lines")
                 if "<<" in s.body]
    assert len(lines) > 4000
    bad = [x for x in lines if error(x) is not None]
    # the one line refused writes its result as a fraction, `<<3/4=3/4>>3/4`: not a number we accept
    assert len(bad) == 1 and "<<3/4=3/4>>" in bad[0] and error(bad[0]) == "wrong_result"
