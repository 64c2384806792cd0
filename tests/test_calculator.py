"""The safe evaluator, the annotation state, and forcing through plain `model.generate`."""

import time

import pytest
import torch

from mathpo.sampling.calculator import CalculatorLogitsProcessor, evaluate, format_number, pending


@pytest.mark.parametrize("expr,value", [
    ("48/2", "24"), ("16-3-4", "9"), ("10/3", "3.33"), ("2*20*.01", "0.4"), ("1.20*4", "4.8"),
    ("7//2", "3"), ("7%3", "1"), ("2**10", "1024"), ("-(3+4)", "-7"), ("+5", "5"), ("1,000*2", "2000"),
    ("0.1+0.2", "0.3"), ("2/3", "0.67"), (" 12 * ( 3 + 4 ) ", "84"), ("100*1.1", "110"), ("-1/3", "-0.33"),
    ("3.999999", "4"), ("10**18", "1000000000000000000"), ("2**-1", "0.5"), ("-0.001", "0"),
])
def test_evaluate_arithmetic(expr, value):
    assert evaluate(expr) == value


@pytest.mark.parametrize("expr", [
    "__import__('os')", "__import__('os').system('true')", "().__class__", "(1).real", "a+1", "abs(-1)",
    "[1][0]", "'a'*3", "9**9**9**9", "2**1000", "10**100", "9" * 60, "99999999999*99999999999",
    "1/0", "5%0", "1e400", "1_000", "(" * 300 + "1" + ")" * 300, "", "   ", "2+", "(-8)**0.5", "1 if 1 else 2",
    "1<2", "lambda: 1", "x=1", "1;2", "2,3", "9" * 250, "0x10", "True+1", "1+1\n2",
])
def test_evaluate_refuses_quickly(expr):
    start = time.perf_counter()
    assert evaluate(expr) is None
    assert time.perf_counter() - start < 0.05


def test_evaluate_never_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    monkeypatch.chdir(tmp_path)
    assert evaluate(f"__import__('pathlib').Path('{marker.name}').touch()") is None
    assert not marker.exists()


def test_format_number():
    values = (24, 24.0, 24.00001, 3.14159, 2.5, -7.0)
    assert [format_number(v) for v in values] == ["24", "24", "24", "3.14", "2.5", "-7"]


@pytest.mark.parametrize("text,rest", [
    ("Janet has <<16-3-4=", "9>>"), ("<<16-3-4=9", ">>"), ("<<100/8=12", ".5>>"), ("x <<2**10=1", "024>>"),
    ("<<2+3=6", None), ("<<2+3=5>> so", None), ("<<a+b=", None), ("no annotation = here", None),
    ("<<2+3", None), ("<<1=1>> then <<4*5=", "20>>"), ("<<__import__('os')=", None),
])
def test_pending(text, rest):
    assert pending(text) == rest


def _bias_hook(token_id, amount=100.0):
    """Make a tiny model prefer one token whatever it has seen (rows then differ only by forcing)."""
    def hook(module, args, out):
        out[..., token_id] += amount
        return out
    return hook


def test_logits_processor_forces_with_generate_left_padded_and_sampling(tokenizer, tiny_model):
    tok = tokenizer
    eq = tok("=", add_special_tokens=False).input_ids
    assert len(eq) == 1
    tiny_model.lm_head.register_forward_hook(_bias_hook(eq[0]))
    prompts = ["Some text then <<2+3=", "x <<123*45", "plain", "A longer prompt before it: <<100/8=12"]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    for sample in (False, True):
        torch.manual_seed(0)
        out = tiny_model.generate(**enc, max_new_tokens=8, do_sample=sample, temperature=1.0 if sample else None,
                                  top_k=None, pad_token_id=tok.pad_token_id,
                                  logits_processor=[CalculatorLogitsProcessor(tok)])
        texts = tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        assert texts[0].startswith("5>>=")  # forced from the prompt's open annotation, then the biased "="
        assert texts[1].startswith("=5535>>=")  # "=" sampled, then the result forced
        assert texts[2] == "=" * 8  # nothing to force
        assert texts[3].startswith(".5>>=")  # the partial result completed
