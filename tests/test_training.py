"""`mathpo train`: row conversion, Step-DPO tokenization (no EOS after a step), DPO/SFT/LoRA runs on a
tiny random model at a high learning rate, resume, the CLI and a 2-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model
from mathpo import prompts
from mathpo.cli import main
from mathpo.errors import UserError
from mathpo.training import rows as tdata
from mathpo.training import train
from mathpo.training import train_stage as trun

REPO = Path(__file__).resolve().parents[1]
FAST = {"learning_rate": 3e-3, "save_strategy": "no", "report_to": [], "per_device_train_batch_size": 4}

# Short plain prompts keep the tiny runs fast (the SmolLM2 vocabulary dominates their cost)
PAIRS = [{"prompt": f"Q: {a}+{a}? A:", "chosen": f" {2 * a}. The answer is {2 * a}.",
          "rejected": f" {2 * a + 3}. So it is {2 * a + 3}!"} for a in range(4)]
SFT = [{"prompt": f"Q: {a}*3? A:", "completion": f" {a} times 3 is {3 * a}."} for a in range(4)]


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory, tokenizer) -> Path:
    path = tmp_path_factory.mktemp("small-model")
    make_tiny_model(tokenizer, layers=1, hidden=32).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def completion_logps(model_dir, rows: list[dict], key: str, tokenizer) -> torch.Tensor:
    """Sum of log p(completion + EOS | prompt) per row, computed with plain transformers (not TRL)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for r in rows:
            p = tokenizer(r["prompt"]).input_ids
            full = tokenizer(r["prompt"] + r[key] + tokenizer.eos_token).input_ids
            logits = model(torch.tensor([full])).logits[0, :-1].log_softmax(-1)
            tgt = torch.tensor(full[1:])
            lp = logits.gather(-1, tgt[:, None])[:, 0]
            out.append(lp[len(p) - 1:].sum())
    return torch.stack(out)


# --- rows ----------------------------------------------------------------------------------------

def test_prompt_rule_for_pairs_and_step_rows(tokenizer):
    steps = prompts.STEP_START + " 2 apples.\nStep 2:"
    rows = [{"prompt": "RAW PROMPT:", "chosen": " a", "rejected": " b"},
            {"question": "What is 1+1?", "chosen": "2", "rejected": "3"},
            {"prompt": "How many apples?", "initial_reason_steps": steps, "chosen": " 3 more.\n",
             "rejected": " 5 more.\n", "full_chosen": "x", "full_rejected": "y", "answer": "5", "dataset": "d"}]
    out = tdata.preference_rows(rows, tokenizer, "chat-step")
    assert out[0]["prompt"] == "RAW PROMPT:" and not out[0]["no_eos"]
    assert out[1]["prompt"] == prompts.render(tokenizer, "What is 1+1?", "chat-step") and not out[1]["no_eos"]
    step = out[2]
    assert step["no_eos"] and step["chosen"] == " 3 more.\n"
    # question template + the steps so far, the step opener not repeated
    assert step["prompt"].endswith("<|im_start|>assistant\n" + steps)
    assert step["prompt"].count("Let's think step by step") == 1 and "How many apples?" in step["prompt"]
    # chat-boxed: the steps follow the opened assistant turn directly
    boxed = tdata.preference_rows(rows[2:], tokenizer, "chat-boxed")[0]["prompt"]
    assert boxed == prompts.render(tokenizer, "How many apples?", "chat-boxed") + steps
    assert all(r["length"] > 3 for r in out)



def test_plain_template_answers_start_with_the_space_the_prompt_leaves_out(tokenizer):
    pair = tdata.preference_rows([{"question": "What is 1+1?", "chosen": "2", "rejected": "3"}], tokenizer,
                                 "gsm8k")[0]
    assert pair["prompt"].endswith("\nAnswer:") and (pair["chosen"], pair["rejected"]) == (" 2", " 3")
    sft = tdata.sft_rows([{"question": "What is 1+1?", "solution": "1 + 1 = 2\n#### 2"},
                          {"question": "Q?", "solution": " already spaced"}], tokenizer, "gsm8k")
    assert [r["completion"] for r in sft] == [" 1 + 1 = 2\n#### 2", " already spaced"]
    chat = tdata.sft_rows([{"question": "Q?", "solution": "x"}], tokenizer, "chat-boxed")[0]
    assert chat["completion"] == "x"  # chat templates end the prompt on a newline: nothing added

def test_sft_rows_and_errors(tokenizer):
    recs = [{"id": "g-0", "question": "Q?", "gold": "4", "solution": "2+2=4\n#### 4"}]
    out = tdata.sft_rows(recs + SFT[:1], tokenizer, "chat-gsm8k")
    assert out[0] == {"prompt": prompts.render(tokenizer, "Q?", "chat-gsm8k"), "completion": "2+2=4\n#### 4",
                      "length": out[0]["length"]}
    assert out[1]["prompt"] == SFT[0]["prompt"]
    with pytest.raises(UserError, match="chosen"):
        tdata.preference_rows([{"prompt": "p", "rejected": "r"}], tokenizer, "chat-boxed")
    with pytest.raises(UserError, match="prompt"):
        tdata.preference_rows([{"chosen": "c", "rejected": "r"}], tokenizer, "chat-boxed")
    with pytest.raises(UserError, match="question\\+solution"):
        tdata.sft_rows([{"text": "x"}], tokenizer, "chat-boxed")
    with pytest.raises(UserError, match="unknown training option 'betta'.*beta"):
        trun.config_values("dpo", Path("x"), False, {"betta": 0.1})


# --- Step-DPO tokenization -----------------------------------------------------------------------

def test_step_pairs_get_no_eos_and_share_prompt_tokens(tokenizer, small_model_dir, tmp_path):
    question = "Tom has 2 apples and buys 3. How many?"
    rows = tdata.preference_rows([
        {"prompt": question, "initial_reason_steps": "Let's think step by step.\nStep 1: He had 2.\nStep 2:",
         "chosen": " He buys 3, so 2+3=5.\n", "rejected": " He buys 3, so 2+3=6.\n"},
        {"question": question, "chosen": "2+3=5. The answer is \\boxed{5}.",
         "rejected": "2+3=6. The answer is \\boxed{6}."}], tokenizer, "chat-boxed")
    values = trun.config_values("dpo", tmp_path, False, {**FAST, "precompute_ref_log_probs": False})
    trainer = trun.build_trainer("dpo", str(small_model_dir), tokenizer, rows, values, False, {})
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    ids, comp, att = batch["input_ids"], batch["completion_mask"], batch["attention_mask"]
    eos = tokenizer.eos_token_id
    last = lambda i: ids[i][att[i].bool()][-1].item()  # noqa: E731
    for i in (0, 2):  # step pair: chosen (row 0) and rejected (row 2) end with the step, not EOS
        assert last(i) != eos
        assert tokenizer.decode(ids[i][comp[i].bool()]).endswith("=5.\n" if i == 0 else "=6.\n")
    for i in (1, 3):  # whole-solution pair: EOS appended so the model learns to stop
        assert last(i) == eos
    for i in (0, 1):  # prompt tokens identical across chosen and rejected
        n_prompt = int((att[i].bool() & ~comp[i].bool()).sum())
        assert n_prompt == int((att[i + 2].bool() & ~comp[i + 2].bool()).sum())
        assert torch.equal(ids[i][:n_prompt], ids[i + 2][:n_prompt])
    n_step = int((att[0].bool() & ~comp[0].bool()).sum())
    assert tokenizer.decode(ids[0][:n_step]) == rows[0]["prompt"]


def test_sft_completion_ends_with_eos_and_only_it_is_trained(tokenizer, small_model_dir, tmp_path):
    rows = tdata.sft_rows([{"question": "2+2?", "solution": "4. \\boxed{4}"}], tokenizer, "chat-boxed")
    values = trun.config_values("sft", tmp_path, False, FAST)
    ex = trun.build_trainer("sft", str(small_model_dir), tokenizer, rows, values, False, {}).train_dataset[0]
    n_prompt = len(tokenizer(rows[0]["prompt"]).input_ids)
    assert ex["input_ids"][-1] == tokenizer.eos_token_id  # <|im_end|>: the model learns to stop
    assert ex["labels"] == [-100] * n_prompt + ex["input_ids"][n_prompt:]  # loss on the completion only
    assert tokenizer.decode(ex["input_ids"][:n_prompt]) == rows[0]["prompt"]


def test_padding_free_sft_batch_gives_the_padded_loss(tokenizer, small_model_dir, tmp_path):
    """mathpo's padding-free SFT default: one row of concatenated sequences (no pad tokens) gives the
    loss of the padded batch, so transformers keeps the sequences apart (sdpa, no flash attention)."""
    rows = tdata.sft_rows(SFT + [{"prompt": "Q: a longer question, with more words in it? A:",
                                  "completion": " a longer answer, also with more words. So 7."}], tokenizer, "gsm8k")
    losses = {}
    for free in (True, False):
        values = trun.config_values("sft", tmp_path / str(free), False, {**FAST, "padding_free": free})
        trainer = trun.build_trainer("sft", str(small_model_dir), tokenizer, rows, values, False, {})
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
        assert (batch["input_ids"].shape[0] == 1) == free  # padding-free: one row, no pad tokens
        if free:
            assert values["max_length"] is None  # every row fits: no truncation to give up
        keys = ("input_ids", "attention_mask", "position_ids", "labels")
        with torch.no_grad():
            losses[free] = trainer.model.eval()(**{k: batch[k] for k in keys if k in batch}, use_cache=False).loss
    torch.testing.assert_close(losses[True], losses[False], atol=1e-5, rtol=1e-5)
    long_rows = [{**r, "length": 5000} for r in rows]  # a row past max_length: padded and truncated instead
    values = trun.config_values("sft", tmp_path, False, {})
    trun.fit_padding_free("sft", values, long_rows)
    assert values["padding_free"] is False and "max_length" not in values  # TRL's own limit applies


# --- training runs -------------------------------------------------------------------------------

def test_dpo_full_moves_weights_and_raises_margin_then_resumes(tokenizer, small_model_dir, tmp_path):
    out = tmp_path / "dpo"
    path = train("dpo", str(small_model_dir), PAIRS, str(out),
                 trl={**FAST, "max_steps": 3, "save_strategy": "steps", "save_steps": 1, "report_to": ["tensorboard"]})
    assert path == str(out / "model")
    before = completion_logps(small_model_dir, PAIRS, "chosen", tokenizer) - \
        completion_logps(small_model_dir, PAIRS, "rejected", tokenizer)
    after = completion_logps(path, PAIRS, "chosen", tokenizer) - completion_logps(path, PAIRS, "rejected", tokenizer)
    assert (after - before).mean() > 0.5, (before, after)  # implicit reward margin on the training pairs rises
    logs = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert steps[-1]["rewards/margins"] > steps[0]["rewards/margins"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "learning_rate"} <= set(steps[0])
    assert (out / "metrics.png").stat().st_size > 1000 and list((out / "tensorboard").glob("events.*"))
    # resume: the finished run is returned as is; with the final model gone, training continues at step 3
    assert train("dpo", str(small_model_dir), PAIRS, str(out), resume=True) == path
    with pytest.raises(UserError, match="--resume"):
        train("dpo", str(small_model_dir), PAIRS, str(out))
    import shutil

    shutil.rmtree(out / "model")
    train("dpo", str(small_model_dir), PAIRS, str(out), resume=True,
          trl={**FAST, "max_steps": 4, "save_strategy": "steps", "save_steps": 1})
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in s]
    assert steps == [1, 2, 3, 4]


def test_sft_lowers_loss_on_its_data(tokenizer, small_model_dir, tmp_path):
    before = -completion_logps(small_model_dir, SFT, "completion", tokenizer).mean()
    path = train("sft", str(small_model_dir), SFT, str(tmp_path / "sft"), trl={**FAST, "max_steps": 4})
    after = -completion_logps(path, SFT, "completion", tokenizer).mean()
    assert after < before - 1.0, (before, after)


def test_lora_dpo_via_cli_saves_merged_plain_folder(tokenizer, small_model_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    out = tmp_path / "lora"
    rc = main(["train", "--method", "dpo", "--model", str(small_model_dir), "--data", str(data), "--out", str(out),
               "--lora", "max_steps=2", "learning_rate=0.05", "save_strategy=no", "report_to=[]", "peft.r=4"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    weights = load_file(out / "model" / "model.safetensors")
    base = load_file(small_model_dir / "model.safetensors")
    assert set(weights) == set(base)  # merged: no adapter keys
    assert any(not torch.equal(weights[k], base[k]) for k in base)
    from mathpo import models

    assert models.load(str(out / "model"), quiet=True).model.config.num_hidden_layers == 1
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert main(["train", "--method", "dpo", "--model", str(small_model_dir), "--data", str(data),
                 "--out", str(tmp_path / "x"), "betta=1"]) == 2
    assert main(["train", "--method", "dpo", "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "y")]) == 2


@pytest.mark.slow
def test_two_processes_ddp_on_cpu(tokenizer, small_model_dir, tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SFT))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "mathpo.cli", "train", "--method", "sft", "--model", str(small_model_dir), "--data", str(data),
           "--out", str(out), "max_steps=2", "per_device_train_batch_size=2", "save_strategy=steps", "save_steps=2",
           "report_to=[]", "learning_rate=1e-3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mathpo import models

    assert models.load(str(out / "model"), quiet=True).model.config.num_hidden_layers == 1
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert (ckpt / "model.safetensors").is_file()
    assert models.load(str(ckpt), quiet=True).model is not None
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_cpu_lm_head_settings_give_the_same_log_probs_and_grads(tokenizer):
    """mathpo's CPU settings of TRL's fused LM head (small tiles, completion positions only) change
    memory and time, not the numbers: log-probs and gradients match TRL's defaults, which are back
    once the context ends (so earlier training tests cannot have left them changed either)."""
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    defaults = (kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, trl_utils._use_triton)
    assert not trl_utils._use_triton(torch.device("cpu"))  # TRL's own: no Triton on a CPU, every position scored
    torch.manual_seed(0)
    model = make_tiny_model(tokenizer, layers=1, hidden=32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    ids = torch.randint(0, model.config.vocab_size, (3, 40))
    labels = ids.clone()
    labels[:, :25] = -100  # prompt positions

    def run():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), model.get_output_embeddings().weight.grad.clone()

    ref_lp, ref_grad = run()
    with trun.cpu_lm_head() as changed:
        assert changed
        assert kernel.TOKEN_CHUNK_SIZE == 512 and trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE == 8192
        assert trl_utils._use_triton(torch.device("cpu"))  # completion positions only
        lp, grad = run()
    assert (kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, trl_utils._use_triton) == defaults
    assert (lp[:, :24] == 0).all() and (lp[:, 24:] < 0).all()  # prompt positions unscored
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-5)


