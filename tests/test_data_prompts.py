import json

import pytest

from conftest import DATA, needs_data
from mathpo import data, prompts
from mathpo.errors import UserError


@needs_data("gsm8k/test.jsonl", "gsm8k/train.jsonl")
def test_gsm8k_preset():
    recs = data.load("gsm8k", "test", limit=3, folder=str(DATA))
    assert recs[0]["id"] == "gsm8k-test-0" and recs[0]["gold"] == "18"
    assert "<<16-3-4=9>>" in recs[0]["solution"]
    dev = data.load("gsm8k", "dev", folder=str(DATA))
    train = data.load("gsm8k", "train-6705", folder=str(DATA))
    assert len(dev) == 768 and len(train) == 6705
    assert not {r["id"] for r in dev} & {r["id"] for r in train}


@needs_data("math500/test.jsonl", "math/test.jsonl", "multiarith/test.jsonl")
def test_other_presets():
    m5 = data.load("math500", "test", limit=1, folder=str(DATA))[0]
    assert m5["gold"] == "\\left( 3, \\frac{\\pi}{2} \\right)" and m5["id"] == "test/precalculus/807.json"
    assert m5["subject"] == "Precalculus"
    m = data.load("math", "test", limit=2, folder=str(DATA))
    assert m[0]["gold"] == "2" and m[1]["gold"] == "10"
    ma = data.load("multiarith", "test", limit=1, folder=str(DATA))[0]
    assert ma["gold"] == "39" and ma["question"].startswith("For Halloween")


def test_generic_file_with_mapping(tmp_path):
    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"q": "1+1?", "sol": "It is \\boxed{2}.", "uid": 7}) + "\n")
    recs = data.load(str(p), mapping=data.Mapping(question="q", solution="sol", answer_from="boxed"))
    assert recs == [{"uid": 7, "id": "mine-0", "question": "1+1?", "gold": "2", "solution": "It is \\boxed{2}."}]
    # auto-detection: a GSM8K-style 'answer' is a solution, the final answer is after ####
    p2 = tmp_path / "g.json"
    p2.write_text(json.dumps([{"question": "q?", "answer": "3+4=7\n#### 7"}]))
    assert data.load(str(p2))[0]["gold"] == "7"
    p3 = tmp_path / "c.csv"
    p3.write_text("problem,final\nwhat?,1/2\n")
    assert data.load(str(p3), mapping=data.Mapping(answer="final"))[0]["gold"] == "1/2"


@pytest.mark.parametrize("name,kw,msg", [
    ("nope", {}, "unknown dataset 'nope'"),
    ("gsm8k", {"split": "xx"}, "has no split 'xx'"),
    ("gsm8k", {"limit": 0}, "--limit must be positive"),
    ("/no/such.jsonl", {}, "no such file"),
])
def test_bad_dataset_inputs(name, kw, msg):
    with pytest.raises(UserError, match=msg):
        data.load(name, folder=str(DATA), **kw)


def test_bad_mapping(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(UserError, match="no question field"):
        data.load(str(p))
    p.write_text("")
    with pytest.raises(UserError, match="no rows"):
        data.load(str(p))


@pytest.mark.parametrize("name", ["gsm8k", "alpaca", "alpaca-step", "chat-gsm8k", "chat-step"])
def test_prompt_tokens_are_a_prefix_of_prompt_plus_answer(tokenizer, name):
    """Training tokenizes prompt + answer as one text; sampling sees the prompt's tokens alone. They
    agree only if the prompt ends on a token boundary (no trailing space to merge into the answer)."""
    t = prompts.get(name)
    prompt = prompts.render(tokenizer, "Tom has 3 apples and buys 4. How many?", name)
    answer = t.as_answer("He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7")
    special = prompts.add_special_tokens(name)
    p_ids = tokenizer(prompt, add_special_tokens=special).input_ids
    full = tokenizer(prompt + answer, add_special_tokens=special).input_ids
    assert full[:len(p_ids)] == p_ids
    assert tokenizer.decode(full[len(p_ids):]) == answer


def test_prompts(tokenizer):
    chat = prompts.render(tokenizer, "What is 2+3?", "chat-boxed")
    assert chat.endswith("<|im_start|>assistant\n") and "\\boxed{}" in chat
    step = prompts.render(tokenizer, "Q?", "chat-step", prefix=" 2+3=5.\nStep 2:")
    assert step.endswith("<|im_start|>assistant\nLet's think step by step.\nStep 1: 2+3=5.\nStep 2:")
    plain = prompts.render(tokenizer, "Q?", "gsm8k", fewshot=[{"question": "A?", "solution": "1\n#### 1"}])
    assert plain == "Question: A?\nAnswer: 1\n#### 1\n\nQuestion: Q?\nAnswer:"  # the model writes the space
    shots = prompts.render(tokenizer, "Q?", "chat-gsm8k", fewshot=[{"question": "A?", "solution": "#### 1"}])
    assert shots.count("<|im_start|>user") == 2 and "#### 1<|im_end|>" in shots
    with pytest.raises(UserError, match="unknown template"):
        prompts.get("nope")
