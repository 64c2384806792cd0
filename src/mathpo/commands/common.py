"""Option groups shared by several subcommands, and the helpers that turn them into objects."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from .. import data, models, prompts
from ..config import Options
from ..errors import UserError
from ..sampling import DECODE_ATTENTION, BackendSettings, SamplingParams


def new_command(sub, name: str, help: str, func) -> tuple[argparse.ArgumentParser, Options]:
    parser = sub.add_parser(name, help=help, description=help)
    opts = Options(parser)
    parser.set_defaults(func=func, options=opts)
    return parser, opts


def model_options(opts: Options) -> None:
    opts.add("--model", default="smollm2-135m-instruct",
             help="local HF folder, hub id, or embedded name (smollm2-135m-instruct)")
    opts.add("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU; with --backend vllm, vLLM's "
             "auto: the checkpoint's dtype), float32, bfloat16, float16")
    opts.add("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1 ...")
    opts.add("--cache-dir", default=None, help="where converted embedded models live (else $MATHPO_CACHE)")


def dataset_options(opts: Options, default: str | None = "gsm8k") -> None:
    opts.add("--dataset", default=default,
             help=f"preset ({', '.join(data.PRESETS)}), a .jsonl/.json/.csv/.parquet file, or hub:owner/name")
    opts.add("--split", default="test", help="split of a preset or hub dataset")
    opts.add("--limit", type=int, default=None, help="keep the first N questions")
    opts.add("--data-dir", default=None, help="folder with the preset files (else $MATHPO_DATA or ../shared/data)")
    opts.add("--question-field", default=None, help="field mapping: the question")
    opts.add("--answer-field", default=None, help="field mapping: the final answer")
    opts.add("--solution-field", default=None, help="field mapping: a worked solution")
    opts.add("--answer-from", default="auto", choices=["auto", "field", "hashes", "boxed"],
             help="where the gold answer comes from: the answer field, after '#### ', or the last \\boxed{}")


def sampling_options(opts: Options, n: int = 1, temperature: float = 0.0) -> None:
    opts.add("--template", default=prompts.DEFAULT, help=f"prompt template ({', '.join(prompts.TEMPLATES)})")
    opts.add("--fewshot", type=int, default=0, help="few-shot examples from the dataset's train split")
    opts.add("--n", type=int, default=n, help="samples per question")
    opts.add("--temperature", type=float, default=temperature, help="0 = greedy")
    opts.add("--top-p", type=float, default=1.0, help="nucleus sampling")
    opts.add("--max-new-tokens", type=int, default=512, help="tokens per completion at most")
    opts.add("--stop", action="append", default=[], help="stop string (repeatable); templates add their own")
    opts.add("--seed", type=int, default=0, help="sampling seed; same seed and settings give the same rows")
    opts.add("--calculator", action="store_true", default=False,
             help="force the results of <<expr=...>> annotations (safe arithmetic, never eval)")
    backend_options(opts)


def backend_options(opts: Options) -> None:
    """The backend's settings (`BackendSettings`), for every command that samples."""
    opts.add("--backend", default="hf", choices=["hf", "vllm"], help="sampling backend")
    opts.add("--sample-dtype", default="auto",
             help="hf backend: dtype to sample in (auto: bf16 on CPUs with native bf16, else the model's)")
    opts.add("--kv-gb", type=float, default=None,
             help="hf backend: memory for the KV cache in GiB (default 1.5 on CPU, 60%% of free GPU memory)")
    opts.add("--pack-linears", action=argparse.BooleanOptionalAction, default=True,
             help="hf backend on CPU: the sampling copy's linear weights packed once for oneDNN and its "
                  "layers' small ops fused (default on; 1.17-1.20x on a Zen 4 EPYC; samples equal the unpacked "
                  "model's up to the rounding of oneDNN's blocking)")
    opts.add("--decode-attention", default="fused", choices=DECODE_ATTENTION,
             help="hf backend on CPU: decode attention through mathpo's fused op (built at first use) "
                  "or PyTorch's flash kernel")
    opts.add("--batch-size", type=int, default=None,
             help="rows generated together (hf backend; default 128 on CPU, 256 on CUDA, capped by KV memory)")
    opts.add("--vllm-args", default=None, metavar="'{KEY: VALUE, ...}'",
             help="vllm backend: vLLM engine arguments, e.g. '{tensor_parallel_size: 2}' "
                  "(or vllm_args.KEY=VALUE); they win over mathpo's own")


def load_records(cfg: dict) -> list[dict]:
    mapping = data.Mapping(cfg["question_field"], cfg["answer_field"], cfg["solution_field"], cfg["answer_from"])
    if cfg.get("dataset") is None:
        raise UserError("--dataset is required")
    return data.load(cfg["dataset"], cfg["split"], cfg["limit"], cfg["data_dir"], mapping)


def fewshot_records(cfg: dict) -> list[dict]:
    k = cfg.get("fewshot") or 0
    if k <= 0:
        return []
    rows = data.load(cfg["dataset"], "train", k, cfg["data_dir"])
    if any(r.get("solution") is None for r in rows):
        raise UserError(f"--fewshot needs worked solutions in {cfg['dataset']}'s train split")
    return rows


def sampling_params(cfg: dict) -> SamplingParams:
    return SamplingParams(n=cfg["n"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                          max_new_tokens=cfg["max_new_tokens"], stop=tuple(cfg["stop"] or ()),
                          seed=cfg["seed"], calculator=bool(cfg["calculator"]))


def check_model(cfg: dict) -> None:
    """Fail early (before any output is written) on a model name that cannot resolve."""
    if cfg["model"] not in models.EMBEDDED:
        models.resolve(cfg["model"])


def save_config(out_dir: Path, cfg: dict) -> None:
    from ..records import atomic_write_text

    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(str(text)).name)[:60]


def prepare_sampling(cfg: dict) -> tuple[list[dict], SamplingParams, list[dict]]:
    """Records, sampling params and few-shot rows; every user mistake surfaces here, before a
    model loads or anything is written."""
    records = load_records(cfg)
    params = sampling_params(cfg)
    BackendSettings.of(cfg).check()
    prompts.get(cfg["template"])
    fewshot = fewshot_records(cfg)
    check_model(cfg)
    return records, params, fewshot


def make_backend(cfg: dict, loaded, template: str | None = None):
    from .. import sampling

    return sampling.make_backend(loaded, BackendSettings.of(cfg), template or cfg["template"])


def default_out(cfg: dict, command: str) -> Path:
    return Path(cfg["out"] or f"runs/{command}/{slug(cfg['dataset'])}-{cfg['split']}-{slug(cfg['model'])}")
