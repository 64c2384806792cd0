"""The hf backend's continuous-batching engine on tiny random models: same rows as plain `generate`,
calculator forcing per row, stop strings, reproducibility, streaming, and resume after a kill."""

import json

import pytest
import torch

from mathpo.sampling import Completion, SamplingParams, engine, sampler, slots
from mathpo.sampling.hf import HFBackend
from mathpo.sampling.sample_stage import sample_records

PROMPTS = ["Hello there", "What is 2+3?", "A much longer prompt about numbers and apples and pears " * 3,
           "Step 1: Tom has 3 apples."]


def backend(model, tok, **kw):
    return HFBackend(model, tok, sample_dtype=kw.pop("sample_dtype", "fp32"), **kw)


def texts(results):
    return [[(c.text, c.tokens, c.finish) for c in comps] for comps in results]


def sharpen(model, factor=6.0):
    """Peaked next-token distributions, like a trained model's: float noise between batch shapes
    (packed prefill, GEMM blocking) then cannot move a draw across a token boundary."""
    def hook(module, args, out):
        return out * factor
    return model.lm_head.register_forward_hook(hook)


def bias(model, token_id, amount=100.0):
    def hook(module, args, out):
        out[..., token_id] += amount
        return out
    return model.lm_head.register_forward_hook(hook)


@pytest.mark.parametrize("attention", ["fused", "flash"])  # decode steps: mathpo's CPU op / PyTorch's
@pytest.mark.parametrize("batch_size", [3, 64])  # one prompt per prefill; all prompts packed in one
def test_engine_matches_generate_greedy(tokenizer, tiny_model, batch_size, attention):
    fast = backend(tiny_model, tokenizer, batch_size=batch_size, decode_attention=attention)
    assert fast.engine is not None and fast.engine.fused == (attention == "fused")
    plain = backend(tiny_model, tokenizer, engine="generate")
    params = SamplingParams(n=2, max_new_tokens=10)
    assert texts(fast.generate(PROMPTS, params)) == texts(plain.generate(PROMPTS, params))


def test_model_is_left_as_it_was(tokenizer, tiny_model):
    ids = torch.tensor([tokenizer("Hello there", add_special_tokens=False).input_ids])
    before = tiny_model(ids).logits
    impl = tiny_model.config._attn_implementation
    backend(tiny_model, tokenizer).generate(PROMPTS[:2], SamplingParams(max_new_tokens=3))
    assert tiny_model.config._attn_implementation == impl
    assert torch.equal(tiny_model(ids).logits, before)


def test_bf16_copy_leaves_fp32_model(tokenizer, tiny_model):
    b = backend(tiny_model, tokenizer, sample_dtype="bf16")
    assert b.model.dtype == torch.bfloat16 and tiny_model.dtype == torch.float32
    out = b.generate(PROMPTS, SamplingParams(n=2, temperature=0.7, max_new_tokens=6))
    assert [len(c) for c in out] == [2] * len(PROMPTS) and all(c.tokens == 6 for cs in out for c in cs)


@pytest.mark.parametrize("batch_size", [2, 5, 64])
def test_calculator_forces_rows_at_different_points(tokenizer, tiny_model, batch_size):
    # The biased model always writes "=": forcing is then the only thing that varies between rows.
    bias(tiny_model, tokenizer("=", add_special_tokens=False).input_ids[0])
    prompts = ["Some text then <<2+3=", "x <<123*45", "plain", "A longer prompt before it: <<100/8=12",
               "<<__import__('os').getcwd()="]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=9, seed=3, calculator=True)
    got = backend(tiny_model, tokenizer, batch_size=batch_size).generate(prompts, params)
    starts = ["5>>=", "=5535>>=", "=========", ".5>>=", "========="]
    for comps, start in zip(got, starts):
        assert all(c.text.startswith(start) and c.tokens == 9 for c in comps), (start, comps)
    off = backend(tiny_model, tokenizer).generate(prompts, SamplingParams(n=1, max_new_tokens=9))
    assert [c[0].text for c in off] == ["=" * 9] * len(prompts)  # without --calculator nothing is forced
    plain = backend(tiny_model, tokenizer, engine="generate").generate(prompts, params)
    assert texts(plain) == texts(got)  # the logits-processor path forces the same tokens


def test_stop_strings_and_eos(tokenizer, tiny_model):
    hook = bias(tiny_model, tokenizer("=", add_special_tokens=False).input_ids[0])
    params = SamplingParams(n=1, max_new_tokens=10, stop=("===",))
    for kind in ("continuous", "generate"):
        got = backend(tiny_model, tokenizer, engine=kind).generate(["a", "b c"], params)
        assert texts(got) == [[("", 3, "stop")]] * 2
    hook.remove()
    bias(tiny_model, tokenizer.eos_token_id)
    got = backend(tiny_model, tokenizer).generate(["a", "b c"], SamplingParams(n=2, max_new_tokens=10))
    assert texts(got) == [[("", 1, "stop")] * 2] * 2


def test_sampling_reproducible_and_independent_of_batch(tokenizer, tiny_model):
    sharpen(tiny_model)
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=7)
    small = texts(backend(tiny_model, tokenizer, batch_size=3).generate(PROMPTS, params))
    big = backend(tiny_model, tokenizer, batch_size=64)
    assert texts(big.generate(PROMPTS, params)) == small
    assert texts(big.generate(PROMPTS[::-1], params))[::-1] == small
    assert texts(big.generate(PROMPTS[1:2], params)) == small[1:2]  # alone or in company: the same
    assert len({c[0] for c in small[0]}) == 3  # the n samples differ
    other = texts(big.generate(PROMPTS, SamplingParams(**{**params.as_dict(), "seed": 8, "stop": ()})))
    assert other != small


def test_common_prefix_found_and_capped():
    head = list(range(100, 100 + engine.MIN_COMMON))
    assert engine.common_prefix([head + [1, 2], head + [1, 3]]) == engine.MIN_COMMON + 1
    assert engine.common_prefix([head + [1], head + [1, 5]]) == engine.MIN_COMMON  # one token of its own left
    assert engine.common_prefix([head[:-1] + [1], head[:-1] + [2]]) == 0  # too short to pay
    assert engine.common_prefix([head + [1, 2]]) == 0  # alone: its n samples share it already
    assert engine.common_prefix([head + [1], [7] + head]) == 0


def test_prompts_with_a_common_prefix_give_the_same_rows(tokenizer, tiny_model, monkeypatch):
    # A long shared head (a few-shot block) is prefilled once and attended once per step; the rows
    # are the ones each prompt gets without it: greedy as plain generate, samples as with it off.
    # (Its merge sums in another order, ~1e-6 on the logits: peaked enough that no draw flips.)
    sharpen(tiny_model, 40.0)
    head = "Worked example: Tom has 3 apples and buys 4 more, so 3 + 4 = 7 apples. " * 4
    prompts = [head + q for q in PROMPTS]
    assert engine.common_prefix(backend(tiny_model, tokenizer).encode(prompts)) >= engine.MIN_COMMON
    used = []
    common = slots._common
    monkeypatch.setattr(slots, "_common", lambda cache, *a: used.append(cache.common_len) or common(cache, *a))
    greedy = SamplingParams(n=2, max_new_tokens=10)
    fast = backend(tiny_model, tokenizer, batch_size=5)  # rows refilled as others end
    assert texts(fast.generate(prompts, greedy)) == texts(backend(tiny_model, tokenizer, engine="generate")
                                                          .generate(prompts, greedy))
    assert used and len(set(used)) == 1
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=8, seed=7)
    shared = texts(fast.generate(prompts, params))
    monkeypatch.setattr(engine, "MIN_COMMON", 10 ** 6)
    calls = len(used)
    assert texts(fast.generate(prompts, params)) == shared
    assert len(used) == calls  # the second run went without it


@pytest.mark.parametrize("attention", ["fused", "flash"])
def test_common_prefix_logits_equal_the_models_own(tokenizer, tiny_model, monkeypatch, attention):
    # The logits each row samples from, at prefill and at the next step, against the model's own
    # forward over the whole sequence (positions, masks and the three-part merge all enter them).
    head = "Worked example: Tom has 3 apples and buys 4 more, so 3 + 4 = 7 apples. " * 4
    prompts = [head + "Q?", head + "What is 2+3?", head + "A longer question about pears and apples?"]
    b = backend(tiny_model, tokenizer, batch_size=8, decode_attention=attention)
    ids = b.encode(prompts)
    assert engine.common_prefix(ids) >= engine.MIN_COMMON and len({len(i) for i in ids}) == 3
    seen, picked, choose = [], [], sampler.choose

    def spy(logits, *args):
        seen.append(logits)
        picked.append(choose(logits, *args))
        return picked[-1]
    monkeypatch.setattr(sampler, "choose", spy)
    out = b.generate(prompts, SamplingParams(n=1, max_new_tokens=2))
    assert len(seen) == 2 and all(c[0].tokens == 2 for c in out)  # one packed prefill (prompts in length
    for k, tokens in enumerate(ids):                                 # order, as given), one decode step
        with torch.inference_mode():
            ref = tiny_model(torch.tensor([tokens + [int(picked[0][k])]])).logits[0, -2:]
        assert torch.allclose(seen[0][k], ref[0], atol=1e-4), k
        assert torch.allclose(seen[1][k], ref[1], atol=1e-4), k


def test_choose_top_p_and_greedy():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    draws = [i / 200 for i in range(200)]
    picks = sampler.choose(logits.repeat(200, 1), 1.0, 0.7, draws).tolist()
    assert set(picks) == {0, 1} and abs(picks.count(0) / 200 - 0.5 / 0.8) < 0.02
    picks = sampler.choose(logits.repeat(200, 1), 1.0, 1.0, draws).tolist()
    counts = [picks.count(t) for t in range(4)]  # the inverse CDF: draws split as the probabilities
    assert all(abs(c - e) <= 1 for c, e in zip(counts, [100, 60, 30, 10])), counts
    assert sampler.choose(logits, 0.0, 1.0, [0.99]).tolist() == [0]
    assert sampler.choose(logits, 1.0, 1e-6, [0.99]).tolist() == [0]


def test_stream_small_prefix_calls_and_progress(tokenizer, tiny_model):
    b = backend(tiny_model, tokenizer, batch_size=8)
    prefixes = [f"Question {i}\nStep 1: x = <<{i}*7=" for i in range(5)]
    seen = []
    for i, comps in b.generate_stream(prefixes, SamplingParams(n=3, temperature=0.8, max_new_tokens=5,
                                                               calculator=True)):
        seen.append(i)
        assert all(c.text.startswith(str(i * 7)) for c in comps)
    assert sorted(seen) == list(range(5))
    calls = []
    assert b.generate([], SamplingParams()) == []
    out = b.generate(prefixes[:2], SamplingParams(n=2, max_new_tokens=3), progress=calls.append)
    assert calls == [1, 1] and [len(c) for c in out] == [2, 2]


def test_slots_sized_to_memory(tokenizer, tiny_model):
    b = backend(tiny_model, tokenizer, batch_size=64, kv_gb=1e-9)
    assert b.engine.slots_for(rows=100, length=512, n=4) == 4  # never fewer than one prompt's n samples
    b = backend(tiny_model, tokenizer, batch_size=64, kv_gb=4)
    assert b.engine.slots_for(rows=100, length=512, n=4) == 64
    assert b.engine.slots_for(rows=6, length=512, n=3) == 6


class Interrupted:
    """Wraps a backend; the kill arrives after `after` questions have streamed out."""

    def __init__(self, inner, after):
        self.inner, self.after, self.name = inner, after, "hf"

    def generate_stream(self, prompts, params):
        for k, item in enumerate(self.inner.generate_stream(prompts, params)):
            if k == self.after:
                raise KeyboardInterrupt
            yield item


def test_resume_after_kill(tmp_path, tokenizer, tiny_model):
    sharpen(tiny_model)
    records = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "gold": str(2 * i)} for i in range(7)]
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=5, seed=1)
    b = backend(tiny_model, tokenizer, batch_size=4)
    whole = tmp_path / "whole.jsonl"
    sample_records(records, b, tokenizer, params, whole, "tiny")
    path = tmp_path / "killed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sample_records(records, Interrupted(b, 3), tokenizer, params, path, "tiny", flush_seconds=0)
    first = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(first) == 6 and len({r["id"] for r in first}) == 3  # whole questions only
    stats = sample_records(records, b, tokenizer, params, path, "tiny")
    assert stats["questions_skipped"] == 3 and stats["rows_written"] == 8
    assert path.read_text() == whole.read_text()  # same rows, question order, nothing lost or doubled


def test_backend_interface_rows_are_completions(tokenizer, tiny_model):
    """Backend.generate: n Completions per prompt, in prompt order; `text` is what was generated,
    `tokens` counts it, `finish` says why it ended."""
    bias(tiny_model, tokenizer("=", add_special_tokens=False).input_ids[0])  # the model writes "=" only
    params = SamplingParams(n=2, max_new_tokens=9, calculator=True)
    out = backend(tiny_model, tokenizer).generate(["plain", "Then <<2+3=", "plain again"], params)
    assert [len(comps) for comps in out] == [2, 2, 2]
    assert all(type(c) is Completion and c.tokens == 9 and c.finish == "length" for comps in out for c in comps)
    assert [c.text for c in out[0] + out[2]] == ["=" * 9] * 4
    assert all(c.text.startswith("5>>=") for c in out[1])  # the calculator's result, in the second prompt's row


@pytest.mark.real_model
def test_real_model_bf16_with_calculator(smol_path):
    from mathpo import models, prompts

    loaded = models.load(str(smol_path), quiet=True)
    b = HFBackend(loaded.model, loaded.tokenizer)  # defaults: bf16 copy where the CPU has it
    q = "Natalia sold 48 clips in April and half as many in May. How many clips did she sell in May?"
    texts = [prompts.render(loaded.tokenizer, q, "chat-gsm8k"),
             prompts.render(loaded.tokenizer, q, "chat-gsm8k", prefix="In May she sold 48/2 = <<48/2=")]
    out = b.generate(texts, SamplingParams(n=2, temperature=0.7, max_new_tokens=24, seed=0, calculator=True))
    assert all(c.text.startswith("24>>") for c in out[1])
    assert any(any(w in c.text.lower() for w in ("the", "she", "clips", "step")) for c in out[0])  # English
    assert loaded.model.dtype == torch.float32  # the caller's model is untouched


def test_interleaved_calls_keep_their_own_state(tokenizer, tiny_model):
    # Per-call state (params, KV cache, stop window) lives with the call, not the engine: two streams
    # advanced in turn on one engine give what each gives alone.
    sharpen(tiny_model)
    b = backend(tiny_model, tokenizer, batch_size=2)  # a few rounds each, so their forwards interleave
    first = SamplingParams(n=2, temperature=1.0, max_new_tokens=3, seed=1)  # ends first
    second = SamplingParams(n=1, max_new_tokens=9, stop=("ab",))
    alone = [dict(b.generate_stream(PROMPTS[:2], first)), dict(b.generate_stream(PROMPTS, second))]
    streams, together = [b.generate_stream(PROMPTS[:2], first), b.generate_stream(PROMPTS, second)], [{}, {}]
    while streams[0] or streams[1]:
        for k, s in enumerate(streams):
            if s is not None:
                item = next(s, None)
                if item is None:
                    streams[k] = None
                else:
                    together[k][item[0]] = item[1]
    assert together == alone
    assert not {"params", "cache", "stop_keep"} & set(vars(b.engine))
