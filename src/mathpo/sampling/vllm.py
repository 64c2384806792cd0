"""The vLLM backend (`--backend vllm`), written to vLLM's documented offline API (`LLM.generate`,
`SamplingParams`, `TokensPrompt`; the calculator through a request-level logits processor wrapped
by `AdapterLogitsProcessor`). Kept thin; it is not exercised on the CPU machines mathpo is tested on.

Rows match the hf backend's: the same prompts (tokenized here, so special tokens follow the
template), n samples per prompt, stop strings cut and counted the same way, `finish` stop/length.
Used by `mathpo sample` / `eval` when vLLM is installed and asked for.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UserError
from . import Completion, SamplingParams, calculator, truncate_at_stop

CALC_ARG = "mathpo_calculator"


def _calculator_processor():
    """vLLM's request-level wrapper around the same forcing the hf backend does."""
    from transformers import AutoTokenizer
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class CalculatorAdapter(AdapterLogitsProcessor):
        def __init__(self, vllm_config, device, is_pin_memory):
            super().__init__(vllm_config, device, is_pin_memory)
            tok = AutoTokenizer.from_pretrained(vllm_config.model_config.tokenizer)
            self.forcer = calculator.CalculatorLogitsProcessor(tok)

        def is_argmax_invariant(self) -> bool:
            return False  # it changes greedy choices too

        def new_req_logits_processor(self, params):
            if not (params.extra_args or {}).get(CALC_ARG):
                return None
            tok, forcer = self.forcer.tok, self.forcer

            def force(output_ids: list[int], logits):
                t = forcer.next_token(tok.decode(output_ids[-forcer.tail_tokens:], skip_special_tokens=True))
                if t is not None:
                    logits.fill_(float("-inf"))
                    logits[t] = 0.0
                return logits

            return force

    return CalculatorAdapter


class VLLMBackend:
    name = "vllm"

    def __init__(self, path: str, add_special_tokens: bool = False, batch_size: int | None = None,
                 dtype: str = "auto", **options):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("backend vllm needs vLLM installed (pip install vllm); or use --backend hf") from None
        # batch_size is the hf backend's knob; vLLM schedules by memory (gpu_memory_utilization in options).
        self.llm = LLM(model=path, dtype=dtype, logits_processors=[_calculator_processor()], **options)
        self.tok = self.llm.get_tokenizer()
        self.add_special_tokens = add_special_tokens

    def generate(self, prompts: list[str], params: SamplingParams,
                 progress: Callable[[int], None] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMParams
        from vllm.inputs import TokensPrompt

        inputs = [TokensPrompt(prompt_token_ids=self.tok(p, add_special_tokens=self.add_special_tokens).input_ids)
                  for p in prompts]
        sp = VLLMParams(n=params.n, temperature=params.temperature, top_p=params.top_p,
                        max_tokens=params.max_new_tokens, stop=list(params.stop) or None, seed=params.seed,
                        extra_args={CALC_ARG: True} if params.calculator else None)
        out = []
        for result in self.llm.generate(inputs, sp, use_tqdm=False):
            comps = []
            for o in result.outputs:
                text, _ = truncate_at_stop(o.text, params.stop)
                comps.append(Completion(text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop"))
            out.append(comps)
            if progress:
                progress(1)
        return out
