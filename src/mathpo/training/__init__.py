"""SFT, DPO and Step-DPO through TRL's SFTTrainer / DPOTrainer (`mathpo train`, `mathpo loop`).

    from mathpo.training import train
    path = train("dpo", "smollm2-135m-instruct", "runs/p/pairs.jsonl", "runs/dpo-1", lora=True,
                 trl={"beta": 0.1, "max_steps": 100})
    # path == "runs/dpo-1/model": a plain HF folder that mathpo.models.load(path) loads

Rows (see `mathpo.training.rows` for the exact rule):
- DPO: `{prompt, chosen, rejected}` with `prompt` already rendered (as `mathpo sample` writes it), or
  `{question, chosen, rejected}` rendered with `template`; Step-DPO rows (Math-Step-DPO-10K schema:
  `prompt` = question, `initial_reason_steps`, single-step `chosen`/`rejected`, ...) get the question
  template plus the steps as prompt, and no EOS after the step.
- SFT: `{prompt, completion}` or `{question, solution}` (e.g. `gsm8k:train` for warm-up SFT).
Whole completions end with the tokenizer's EOS (`<|im_end|>` for SmolLM2) so the model learns to stop.
Loss on completion tokens only.
"""

from .train_stage import METHODS, train

__all__ = ["METHODS", "train"]
