"""A missing optional dependency is one line naming the extra to install, and exit code 2.

Each command runs in a subprocess where the module is blocked (`sys.modules[name] = None`, which
makes `import name` raise ModuleNotFoundError and `find_spec` raise ValueError), so the test does
not depend on what this machine has installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mathpo.errors import UserError, require

REPO = Path(__file__).resolve().parents[1]


def run_blocked(blocked: list[str], args: list[str], cwd: Path, env: dict | None = None, timeout: float = 120):
    code = (f"import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\n"
            "from mathpo.cli import main\nsys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def assert_one_line(r, command: str, extra: str, module: str):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith(f"mathpo {command}: error: ") and module in lines[0], lines[0]
    assert lines[0].endswith(f"pip install 'mathpo[{extra}]'"), lines[0]


def test_require_names_the_extra(monkeypatch):
    import json as present

    assert require("json", "serve", "x") is present
    assert require("json", "serve", "x", load=False) is None
    monkeypatch.setitem(sys.modules, "gradio", None)
    for load in (True, False):
        with pytest.raises(UserError) as e:
            require("gradio", "serve", "mathpo serve", load=load)
        assert str(e.value).endswith("pip install 'mathpo[serve]'") and "gradio" in str(e.value)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"mathpo\[vllm\]"):
        require("surely_not_a_module_mathpo", "vllm", "--backend vllm", load=False)


def test_serve_without_gradio(tmp_path, tiny_model_dir):
    r = run_blocked(["gradio"], ["serve", "--model", str(tiny_model_dir), "--port", "1"], tmp_path)
    assert_one_line(r, "serve", "serve", "gradio")


def test_vllm_backend_without_vllm(tmp_path, tiny_model_dir):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    r = run_blocked(["vllm"], ["sample", "--model", str(tiny_model_dir), "--dataset", str(data), "--backend", "vllm",
                               "--out", str(tmp_path / "out"), "--max-new-tokens", "4"], tmp_path)
    assert_one_line(r, "sample", "vllm", "vllm")


def test_deepspeed_launcher_without_deepspeed(tmp_path):
    zero3 = REPO / "configs" / "accelerate" / "zero3.yaml"
    r = run_blocked(["deepspeed"], ["loop", str(REPO / "configs" / "demo.yaml"), f"out={tmp_path / 'run'}",
                                    f"launcher=accelerate launch --config_file {zero3}"], tmp_path)
    assert_one_line(r, "loop", "deepspeed", "deepspeed")
    assert not (tmp_path / "run").exists()  # refused before the first stage
    # DDP needs nothing more.
    from mathpo.training.launcher import check_launcher, uses_deepspeed

    check_launcher(f"accelerate launch --config_file {REPO / 'configs' / 'accelerate' / 'ddp.yaml'}")
    assert uses_deepspeed(f"accelerate launch --config_file={zero3}") == str(zero3)
    assert uses_deepspeed("accelerate launch --use_deepspeed") == "--use_deepspeed"
    with pytest.raises(UserError, match="launcher config"):
        check_launcher(f"accelerate launch --config_file {tmp_path / 'missing.yaml'}")


def test_train_under_deepspeed_without_deepspeed(tmp_path, tiny_model_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "1 + 1 =", "completion": " 2"}) + "\n")
    r = run_blocked(["deepspeed"], ["train", "--method", "sft", "--model", str(tiny_model_dir), "--data", str(data),
                                    "--out", str(tmp_path / "out")], tmp_path, env={"ACCELERATE_USE_DEEPSPEED": "true"})
    assert_one_line(r, "train", "deepspeed", "deepspeed")


def test_browser_test_skips_naming_the_extra(tmp_path):
    code = ("import sys\nsys.modules['playwright'] = None\nimport pytest\n"
            "sys.exit(pytest.main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "-q", "-rs", "-p", "no:cacheprovider",
                        str(REPO / "tests" / "test_serve_browser.py") + "::test_page_in_headless_chromium"],
                       cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout[-2000:]
    assert "the browser test needs the 'test' extra" in r.stdout and "pip install 'mathpo[test]'" in r.stdout
