"""Input and resume checks: non-UTF-8 inputs are one-line errors, atomic files get the umask's mode,
resumed sampling and step-pair runs refuse other settings, vLLM's engine key tells hub ids apart, Ray
settings are checked and a replacement worker that fails to load counts as a death."""

from __future__ import annotations

import json
import os
import stat
import types

import pytest

from conftest import cli_error
from mathpo import records
from mathpo.cli import main
from mathpo.errors import UserError
from mathpo.pairs import steps
from mathpo.records import atomic_write_text, iter_jsonl, read_json, write_json, write_jsonl
from mathpo.sampling import Completion, SamplingParams, distributed_ray
from mathpo.sampling.sample_stage import sample_records

# ---- records: non-UTF-8 inputs ----------------------------------------------------------------


def test_non_utf8_jsonl_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"completion": "1", "gold": "1"}\n{"completion": "caf\xe9", "gold": "1"}\n')
    with pytest.raises(UserError, match=r"bad\.jsonl:2: not UTF-8 text \(byte 0xe9\)"):
        list(iter_jsonl(bad))


def test_non_utf8_json_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{\n  "a": "caf\xe9"\n}\n')
    with pytest.raises(UserError, match=r"bad\.json: not UTF-8 text \(byte 0xe9 at line 2\)"):
        read_json(bad)


def test_grade_on_latin1_file_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"completion": "The answer is 5 \xb0C", "gold": "5"}\n')
    assert main(["grade", str(bad), "--output", str(tmp_path / "out.jsonl")]) == 2
    assert "bad.jsonl:1: not UTF-8" in cli_error(capsys.readouterr().err)
    assert not (tmp_path / "out.jsonl").exists()


def test_utf8_and_crlf_lines_still_read(tmp_path):
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes('{"q": "café"}\r\n\r\n{"q": "2"}\n'.encode())
    assert [r["q"] for r in iter_jsonl(ok)] == ["café", "2"]


# ---- records: modes of atomic writes ------------------------------------------------------------


def test_atomic_files_get_the_umask_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "_FILE_MODE", 0o644)  # as umask 022 gives
    for path, write in [(tmp_path / "DONE.json", lambda p: write_json(p, {"a": 1})),
                        (tmp_path / "graded.jsonl", lambda p: write_jsonl(p, [{"id": "1"}])),
                        (tmp_path / "report.md", lambda p: atomic_write_text(p, "# r\n"))]:
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_module_mode_follows_the_process_umask():
    old = os.umask(0o022)
    os.umask(old)
    assert records._FILE_MODE == 0o666 & ~old
    assert records._read_umask() == old


def test_replaced_file_keeps_its_own_mode(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("{}")
    path.chmod(0o640)
    write_json(path, {"b": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and read_json(path) == {"b": 2}


# ---- sample stage: resume with other settings ---------------------------------------------------


class Echo:
    """A backend whose completions name the prompt's length (deterministic, no model)."""

    name = "fake"

    def generate(self, prompts_, params, progress=None):
        if progress:
            progress(len(prompts_))
        return [[Completion(f" {len(p)}", 1, "stop") for _ in range(params.n)] for p in prompts_]


RECORDS = [{"id": f"q{i}", "question": f"What is {i} + {i}?", "gold": str(2 * i)} for i in range(4)]
SHOT = [{"question": "What is 1 + 2?", "solution": "1 + 2 = 3.\n#### 3"}]


def _sample(path, recs=RECORDS, stop=(), fewshot=(), template="gsm8k"):
    return sample_records(recs, Echo(), None, SamplingParams(n=2, stop=tuple(stop)), path, "m", template,
                          fewshot=fewshot)


def test_rows_record_their_stop_strings_and_resume_unchanged(tmp_path):
    path = tmp_path / "s.jsonl"
    _sample(path, RECORDS[:2])
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert all(r["stop"] == ["\n\nQuestion:", "\nQuestion:"] for r in rows)  # the template's, as used
    stats = _sample(path)
    assert stats["questions_skipped"] == 2 and stats["rows_written"] == 4


def test_resume_with_other_stop_strings_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    _sample(path, RECORDS[:2])
    before = path.read_text()
    with pytest.raises(UserError, match=r"other settings \(stop .*there, \['####'\] now\); pick another --out"):
        _sample(path, stop=["####"])
    assert path.read_text() == before


def test_resume_with_other_fewshot_or_template_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    _sample(path, RECORDS[:2])
    before = path.read_text()
    with pytest.raises(UserError, match=r"the prompt of question q0 differs.*few-shot.*delete it"):
        _sample(path, fewshot=SHOT)
    with pytest.raises(UserError, match="template 'gsm8k' there, 'alpaca' now"):
        _sample(path, template="alpaca")
    assert path.read_text() == before


def test_settings_mismatch_names_the_setting(tmp_path):
    path = tmp_path / "s.jsonl"
    sample_records(RECORDS[:1], Echo(), None, SamplingParams(n=1, seed=0), path, "m", "gsm8k")
    with pytest.raises(UserError, match=r"other settings \(seed 0 there, 5 now\)"):
        sample_records(RECORDS, Echo(), None, SamplingParams(n=1, seed=5), path, "m", "gsm8k")


def test_rows_without_stop_from_older_runs_still_resume(tmp_path):
    path = tmp_path / "s.jsonl"
    _sample(path, RECORDS[:2])
    old = [{k: v for k, v in json.loads(x).items() if k != "stop"} for x in path.read_text().splitlines()]
    write_jsonl(path, old)
    assert _sample(path)["questions_skipped"] == 2


# ---- step pairs: parts built with other options ---------------------------------------------------


class Always:
    """Every continuation correct: no error is located, so each part is quick and has no rows."""

    def generate(self, prompts_, params, progress=None):
        return [[Completion(" The answer is \\boxed{9}.", 5, "stop") for _ in range(params.n)] for _ in prompts_]


def _graded(k: int) -> list[dict]:
    rows = []
    for q in range(k):
        rows += [{"id": f"q{q}", "question": f"Q{q}?", "gold": "9", "prompt": f"P{q}", "correct": True,
                  "completion": "Step 1: 9.\nThe answer is \\boxed{9}."},
                 {"id": f"q{q}", "question": f"Q{q}?", "gold": "9", "prompt": f"P{q}", "correct": False,
                  "completion": "Step 1: 8.\nStep 2: The answer is \\boxed{8}."}]
    return rows


class Tok:
    def __init__(self, name):
        self.name_or_path = name


def test_parts_record_options_and_model_and_refuse_others(tmp_path):
    parts = tmp_path / "out.parts.jsonl"
    graded = _graded(4)
    _, stats = steps.build_in_parts(graded, parts, Always(), Tok("/m/a"), "chat-step", questions_per_part=2,
                                    rollouts=4)
    saved = [json.loads(x) for x in parts.read_text().splitlines()]
    assert saved[0]["built_with"]["rollouts"] == 4 and saved[0]["built_with"]["model"] == "/m/a"
    assert saved[0]["built_with"]["rectify_n"] == 8  # defaults recorded too
    before = parts.read_text()
    for kwargs, tok, what in [({"rollouts": 8}, "/m/a", "rollouts 4 there, 8 now"),
                              ({"rollouts": 4, "seed": 1}, "/m/a", "seed 0 there, 1 now"),
                              ({"rollouts": 4, "rectify_n": 2}, "/m/a", "rectify_n 8 there, 2 now"),
                              ({"rollouts": 4}, "/m/b", "model '/m/a' there, '/m/b' now")]:
        with pytest.raises(UserError, match=f"other settings \\({what}\\).*delete it to start afresh"):
            steps.build_in_parts(graded, parts, Always(), Tok(tok), "chat-step", questions_per_part=2, **kwargs)
    assert parts.read_text() == before  # refused before any work
    # the same options, passed or defaulted alike, resume every part
    _, again = steps.build_in_parts(graded, parts, Always(), Tok("/m/a"), "chat-step", questions_per_part=2,
                                    rollouts=4, rectify_n=8)
    assert again["parts"] == {"count": 2, "resumed": 2}


def test_parts_from_older_runs_and_other_grouping_are_not_refused(tmp_path):
    parts = tmp_path / "out.parts.jsonl"
    graded = _graded(4)
    steps.build_in_parts(graded, parts, Always(), None, "chat-step", questions_per_part=2, rollouts=4)
    old = [{k: v for k, v in json.loads(x).items() if k != "built_with"} for x in parts.read_text().splitlines()]
    write_jsonl(parts, old)
    _, stats = steps.build_in_parts(graded, parts, Always(), None, "chat-step", questions_per_part=2, rollouts=8)
    assert stats["parts"]["resumed"] == 2  # nothing recorded to compare
    # parts whose questions differ are rebuilt, whatever they were built with; none counts as resumed
    _, stats = steps.build_in_parts(graded, parts, Always(), None, "chat-step", questions_per_part=3, rollouts=2)
    assert stats["parts"] == {"count": 2, "resumed": 0}


# ---- vLLM: the engine key of paths without local files ------------------------------------------


def test_shape_of_hub_ids_differ_and_local_checkpoints_match(tmp_path):
    from mathpo.sampling.vllm import _shape  # reads files only: vLLM is imported when an engine starts

    assert _shape("Qwen/Qwen2.5-Math-7B") != _shape("meta-llama/Llama-3.2-1B")
    assert _shape("Qwen/Qwen2.5-Math-7B") == _shape("Qwen/Qwen2.5-Math-7B")
    a, b = tmp_path / "a", tmp_path / "b"
    for d, version in ((a, "4.1"), (b, "4.2")):
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"hidden_size": 64, "transformers_version": version}))
    assert _shape(str(a)) == _shape(str(b))  # a checkpoint of the same shape swaps in
    assert _shape(str(a)) != _shape(str(tmp_path / "empty"))


# ---- Ray: settings' numbers, a replacement that fails to load --------------------------------------


@pytest.mark.parametrize("value,msg", [
    ({"num_cpus": 0, "num_gpus": 0}, "both 0"),
    ({"num_cpus": -1}, "ray.num_cpus must be a number >= 0"),
    ({"num_cpus": "two"}, "ray.num_cpus must be a number >= 0"),
    ({"num_gpus": -0.5}, "ray.num_gpus must be a number >= 0"),
    ({"restarts": -1}, "ray.restarts must be an integer >= 0"),
    ({"attempts": 0}, "ray.attempts must be a positive integer"),
    ({"workers": True}, "ray.workers must be a positive integer"),
])
def test_ray_settings_numbers_checked(value, msg):
    with pytest.raises(UserError, match=msg):
        distributed_ray.settings(value)


class _Ref:
    count = 0

    def __init__(self, result=None, error=None):
        _Ref.count += 1
        self.order, self.result, self.error = _Ref.count, result, error


class _FakeRay:
    """Just enough of Ray for RayBackend's queue: refs resolve in the order they were made."""

    class RayActorError(Exception):
        pass

    class RayTaskError(Exception):
        pass

    def __init__(self, cpus=2):
        self.exceptions = types.SimpleNamespace(RayActorError=self.RayActorError, RayTaskError=self.RayTaskError)
        self.cpus, self.killed = cpus, []

    def cluster_resources(self):
        return {"CPU": self.cpus}

    def wait(self, refs, num_returns=1):
        first = min(refs, key=lambda r: r.order)
        return [first], [r for r in refs if r is not first]

    def get(self, ref):
        if isinstance(ref, list):
            return [self.get(r) for r in ref]
        if ref.error is not None:
            raise ref.error
        return ref.result

    def kill(self, w):
        self.killed.append(w)


def _worker(ray, fails_load=False, dies=False):
    def ready():
        return _Ref(error=ray.RayTaskError("cannot load") if fails_load else None, result=1)

    def generate(prompts_, params):
        if dies:
            return _Ref(error=ray.RayActorError("gone"))
        return _Ref(result=[[Completion(p, 1, "stop")] for p in prompts_])

    return types.SimpleNamespace(ready=types.SimpleNamespace(remote=ready),
                                 generate=types.SimpleNamespace(remote=generate))


def _backend(monkeypatch, workers, restarts):
    ray = _FakeRay()
    monkeypatch.setattr(distributed_ray, "connect", lambda address: ray)
    made = iter(workers(ray))
    ray.remote = lambda **kw: lambda cls: types.SimpleNamespace(remote=lambda *a: next(made))
    s = distributed_ray.RaySettings(address="local", workers=2, restarts=restarts, chunk=1)
    return distributed_ray.RayBackend(s, None, (), "fake"), ray


@pytest.mark.parametrize("restarts,replaced", [(1, 1), (2, 2)])
def test_replacement_that_fails_to_load_counts_as_a_death(monkeypatch, restarts, replaced):
    # worker 1 dies at its first chunk; its replacement fails to load; with a restart left, the next loads
    b, ray = _backend(monkeypatch, lambda ray: [_worker(ray, dies=True), _worker(ray),
                                                _worker(ray, fails_load=True), _worker(ray)], restarts)
    prompts_ = [f"p{i}" for i in range(6)]
    got = dict(b.generate_stream(prompts_, SamplingParams()))
    assert sorted(got) == list(range(6)) and all(got[i][0].text == prompts_[i] for i in got)
    assert b.replaced == replaced and b.restarts_left == restarts - replaced
    assert len(ray.killed) == 2  # the dead worker and the one that failed to load
