"""Greedy text of the vllm and hf backends on the first N GSM8K test questions, both in one dtype.

    python tests/helpers/vllm_agreement.py MODEL_DIR DATA_DIR float32 [N] [MAX_NEW_TOKENS]

Prints one JSON line {"same": k, "n": N, "share": mean share of hf's text that vLLM's begins with}.
Run in its own process by tests/test_vllm.py, so its engine (not the session's bf16 one) comes and
goes with it; vLLM starts its workers by spawn, hence the __main__ guard."""

from __future__ import annotations

import json
import os
import sys


def agreement(a, b) -> tuple[int, float]:
    """(questions whose first completions are equal, mean share of b's text that a's begins with)."""
    same = sum(x[0].text == y[0].text for x, y in zip(a, b))
    share = sum(len(os.path.commonprefix([x[0].text, y[0].text])) / max(1, len(y[0].text)) for x, y in zip(a, b))
    return same, share / len(b)


def main(path: str, data_dir: str, dtype: str, n: int = 32, max_new_tokens: int = 96) -> dict:
    from mathpo import data, models, prompts
    from mathpo.sampling import SamplingParams
    from mathpo.sampling import vllm as vllm_backend
    from mathpo.sampling.hf import HFBackend

    loaded = models.load(path, quiet=True)
    texts = [prompts.render(loaded.tokenizer, r["question"]) for r in data.load("gsm8k", "test", n, data_dir)]
    params = SamplingParams(max_new_tokens=max_new_tokens)
    a = vllm_backend.VLLMBackend(path, dtype=dtype).generate(texts, params)
    b = HFBackend(loaded.model, loaded.tokenizer, sample_dtype=dtype).generate(texts, params)
    vllm_backend.release()
    same, share = agreement(a, b)
    return {"same": same, "n": n, "share": round(share, 3), "dtype": dtype}


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0], args[1], args[2], *(int(x) for x in args[3:]))))
