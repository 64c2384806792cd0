"""One training run through TRL (`mathpo train`, and `mathpo.training.train` for `mathpo loop`).

Straight line: rows -> TRL rows -> TRL config (TRL defaults < mathpo's fast defaults < overrides)
-> SFTTrainer / DPOTrainer -> train (resumable) -> plain HF folder RUN/model.

Run folder: RUN/checkpoints (Trainer checkpoints, `resume=True` continues from the last one),
RUN/metrics.jsonl + RUN/metrics.png, RUN/tensorboard, RUN/train_config.yaml, RUN/model (final).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .. import allocator, models
from ..errors import UserError
from ..records import atomic_write_text
from ..train_options import trl_fields, trl_key
from . import rows as rows_
from .metrics import MetricsLog

log = logging.getLogger(__name__)

METHODS = ("sft", "dpo")

# mathpo's defaults on top of TRL's own (see README "mathpo train"); every key can be overridden.
# - logging every step, checkpoints every 50 steps (2 kept), TensorBoard;
# - batches grouped by length (less padding); the `length` column needs remove_unused_columns=False;
# - DPO: reference log-probs computed once before training, so no reference model sits in memory and
#   each step runs one forward + backward instead of two forwards + backward;
# - gradient checkpointing on (TRL's own default): measured on SmolLM2-135M DPO (bench/training.py)
#   it costs ~10% per step and saves ~40% of peak memory; gradient_checkpointing=false (or transformers
#   5's name, activation_checkpointing=false) for speed.
COMMON_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1, "save_strategy": "steps", "save_steps": 50, "save_total_limit": 2,
    "report_to": ["tensorboard"], "train_sampling_strategy": "group_by_length",
    "remove_unused_columns": False, "per_device_train_batch_size": 4, "activation_checkpointing": True,
    "dataloader_num_workers": 0, "seed": 0, "disable_tqdm": None,
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "dpo": {"precompute_ref_log_probs": True},  # batch = the training batch (bigger ones raise the peak)
    # padding-free: a batch is one row of concatenated sequences (position ids restart per sequence;
    # transformers masks across them, with sdpa too), so no compute goes into pad tokens
    "sft": {"completion_only_loss": True, "padding_free": True},
}
# Full fine-tuning keeps TRL's AdamW (the optimizer DPO-ST's and Step-DPO's recipes were tuned with).
# `optim=adafactor` (factored second moments, no first moment) is the low-memory choice: 1.1 GB less
# for a 135M model (bench/training.py, variant -adafactor), but it changes the training dynamics
# (the tiny-model loop test's DPO/SFT stages diverged with it at their AdamW settings), so it is opt-in.
FULL_DEFAULTS: dict[str, Any] = {}
# LoRA: the adapter learns at a higher rate than full fine-tuning (TRL's 1e-6 DPO / 2e-5 SFT defaults)
LORA_DEFAULTS: dict[str, Any] = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
LORA_LR = {"dpo": 1e-4, "sft": 2e-4}


def _trl_config_class(method: str):
    from trl import DPOConfig, SFTConfig

    return {"dpo": DPOConfig, "sft": SFTConfig}[method]


def bf16_available() -> bool:
    """bf16 autocast pays off on CUDA with bf16 and on CPUs with native bf16 (AVX512-BF16/AMX)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return models.cpu_has_bf16()  # native bf16 only: see there why not mkldnn's probe


def config_values(method: str, out_dir: Path, lora: bool, trl: dict) -> dict:
    """The TRL config fields of this run: mathpo defaults, then `trl` (unknown keys rejected)."""
    import torch

    values = {**COMMON_DEFAULTS, **METHOD_DEFAULTS[method], "bf16": bf16_available(),
              "use_cpu": not torch.cuda.is_available()}
    if "activation_checkpointing" not in trl_fields(method):  # transformers < 5.20 (vLLM 0.32's range): old name
        values["gradient_checkpointing"] = values.pop("activation_checkpointing")
    if not lora:
        values.update(FULL_DEFAULTS)
    else:
        values["learning_rate"] = LORA_LR[method]
        if values["bf16"]:
            # The base is frozen under LoRA, so it can sit in bf16 (half the memory, no fp32 -> bf16 casts
            # per matmul); PEFT keeps the adapter weights, which the optimizer updates, in fp32.
            values["model_init_kwargs"] = {"dtype": "bfloat16"}
    for key, value in trl.items():
        key = trl_key(method, key)  # unknown keys rejected; the renamed gradient_checkpointing mapped
        if key.endswith("_strategy") and value is False:  # YAML reads `save_strategy=no` as false
            value = "no"
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+", value):
            value = float(value)  # YAML 1.1 reads `learning_rate=1e-3` as a string
        values[key] = value
    values["output_dir"] = str(out_dir / "checkpoints")
    if values.get("disable_tqdm") is None:
        values.pop("disable_tqdm")
    return values


def fit_padding_free(method: str, values: dict, rows: list[dict]) -> None:
    """Padding-free SFT does not truncate (TRL refuses it with a `max_length`): where every row fits
    in `max_length` (a few tokens of slack for tokenizing prompt and completion apart) the limit is
    dropped, as it would cut nothing; otherwise the batches are padded and truncated as usual."""
    if method != "sft" or not values.get("padding_free") or values.get("packing"):
        return
    limit = values.get("max_length", _trl_default(method, "max_length"))
    if limit is None:
        return
    if max(r["length"] for r in rows) + 8 <= limit:
        values["max_length"] = None
    else:
        values["padding_free"] = False


def _trl_default(method: str, name: str):
    return next(f.default for f in dataclasses.fields(_trl_config_class(method)) if f.name == name)


def lora_config(peft: dict):
    from peft import LoraConfig

    kw = {**LORA_DEFAULTS, **peft}
    try:
        return LoraConfig(task_type="CAUSAL_LM", **kw)
    except TypeError as e:
        raise UserError(f"bad peft option: {e}") from None


@dataclass
class NoEosForSteps:
    """Collator hook for Step-DPO rows (the only change to TRL's behaviour here).

    DPOTrainer appends EOS to every string chosen/rejected before tokenizing, with no option to skip it.
    Step-DPO's chosen/rejected are single steps of an unfinished answer: with EOS the model would learn
    to stop after one step. For rows marked `no_eos`, this drops that appended EOS token (EOS is a
    special token, so the tokens before it are what "prompt + step" tokenizes to) and then calls TRL's
    own DataCollatorForPreference. Used for training batches and for the reference log-prob pass alike.
    """

    inner: Any
    eos_token_id: int

    def __call__(self, examples: list[dict]) -> dict:
        fixed = []
        for ex in examples:
            if ex.get("no_eos"):
                ex = dict(ex)
                for key in ("chosen_ids", "rejected_ids"):
                    ids = list(ex[key])
                    if ids and ids[-1] == self.eos_token_id:
                        ex[key] = ids[:-1]
            fixed.append(ex)
        return self.inner(fixed)


# TRL's fused LM head (log-probs without the [tokens x vocab] logits) has two settings meant for GPUs
# that cost a CPU dearly; both are module-level names of TRL, read on every call, so mathpo sets them
# for the span of one training run where there is no CUDA, and restores them after (the log-probs are
# the same; tests/test_training.py checks):
# - tiles of [4096 tokens x 32768 vocab], folded with torch ops whose fp32 temporaries are 0.5 GB
#   apiece (several alive at once, forward and again in backward): 512 x 8192 tiles instead;
# - without Triton it scores every position, prompt included (on Neuron this avoids recompiling per
#   shape); on a CPU, scoring only the completion positions skips that work.
CPU_LM_HEAD_TILE = {"tokens": 512, "vocab": 8192}


@contextlib.contextmanager
def cpu_lm_head():
    """Inside: TRL's fused LM head set up for a CPU (see above); yields False where it is left as it is
    (CUDA, or a TRL without these names). TRL's own values are back on exit."""
    import torch

    try:
        import trl.kernels.chunked_logprob as kernel
        import trl.trainer.utils as trl_utils
    except ImportError:
        kernel = trl_utils = None
    names = [(kernel, "TOKEN_CHUNK_SIZE"), (trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"), (trl_utils, "_use_triton")]
    if torch.cuda.is_available() or not all(hasattr(mod, n) for mod, n in names):
        yield False  # another TRL version, or a GPU: its defaults stay
        return
    saved = [(mod, n, getattr(mod, n)) for mod, n in names]
    on_gpu = trl_utils._use_triton

    def compact(device) -> bool:  # only decides which positions are scored; the fold stays torch
        return device.type == "cpu" or on_gpu(device)

    kernel.TOKEN_CHUNK_SIZE = CPU_LM_HEAD_TILE["tokens"]
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = CPU_LM_HEAD_TILE["vocab"]
    trl_utils._use_triton = compact
    try:
        yield True
    finally:
        for mod, n, value in saved:
            setattr(mod, n, value)


def tensorboard_to(trainer, folder: Path) -> None:
    """Point the trainer's TensorBoard callback (there when `report_to` names tensorboard) at `folder`,
    through the callback's own writer argument (transformers reads no folder option of its own)."""
    from transformers.integrations import TensorBoardCallback

    if not any(isinstance(c, TensorBoardCallback) for c in trainer.callback_handler.callbacks):
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder)) if trainer.accelerator.is_main_process else None
    trainer.remove_callback(TensorBoardCallback)
    trainer.add_callback(TensorBoardCallback(tb_writer=writer))


def build_trainer(method: str, model_path: str, tokenizer, rows: list[dict], values: dict, lora: bool,
                  peft: dict, callbacks=()):
    """The TRL trainer for this run (nothing trained yet)."""
    import datasets
    from trl import DPOTrainer, SFTTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    fit_padding_free(method, values, rows)
    cfg = _trl_config_class(method)(**values)
    peft_config = lora_config(peft) if lora else None
    dataset = datasets.Dataset.from_list(rows)
    common = dict(model=model_path, args=cfg, train_dataset=dataset, processing_class=tokenizer,
                  peft_config=peft_config, callbacks=list(callbacks))
    if method == "sft":
        return SFTTrainer(**common)
    collator = NoEosForSteps(DataCollatorForPreference(
        pad_token_id=tokenizer.pad_token_id, max_length=cfg.max_length, truncation_mode=cfg.truncation_mode,
        pad_to_multiple_of=cfg.pad_to_multiple_of), tokenizer.eos_token_id)
    return DPOTrainer(data_collator=collator, **common)


# torch.save reports a short write (the disk filling mid-checkpoint) as a RuntimeError from its zip
# writer, not as OSError; seen here: "[enforce fail at inline_container.cc:672] . unexpected pos 693743040
# vs 693742932" while saving optimizer.pt on a full disk
_TORCH_SHORT_WRITE = re.compile(r"PytorchStreamWriter failed writing|unexpected pos \d+ vs \d+")
_NEARLY_FULL = 1 << 30  # bytes free: less than one checkpoint of even a 135M model


@contextlib.contextmanager
def full_disk_as_oserror(folder: Path):
    """Inside: torch's short-write RuntimeError on a nearly full disk becomes the ENOSPC OSError that the
    CLI prints as one line (exit 2). The checkpoint it cut short is removed on resume (`_complete`)."""
    try:
        yield
    except RuntimeError as e:
        if _TORCH_SHORT_WRITE.search(str(e)) and shutil.disk_usage(folder).free < _NEARLY_FULL:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder)) from e
        raise


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint-*")) if folder.is_dir() else []


def _complete(checkpoint: Path) -> bool:
    """Whether a checkpoint was saved to the end: the Trainer writes trainer_state.json last, so one
    cut short by a kill lacks it (or holds it torn). Incomplete ones are removed, never resumed from."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        print(f"train: {checkpoint} was cut short (no complete trainer_state.json); removed, resuming before it")
        shutil.rmtree(checkpoint, ignore_errors=True)
        return False


def save_final(trainer, out_dir: Path, base_path: str, lora: bool, merge: bool) -> Path:
    """RUN/model: a plain HF folder (LoRA merged into the base; RUN/adapter keeps the adapter).
    Written beside, then renamed into place."""
    final = out_dir / "model"
    tmp = out_dir / ".model.partial"
    main = trainer.accelerator.is_main_process
    if main and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    target = out_dir / "adapter" if lora else tmp
    trainer.save_model(str(target))  # every process: FSDP / ZeRO-3 gather the weights here
    if lora and not merge:
        return target  # adapter only (merge_lora=false): load it with peft on top of the base model
    if main:
        if lora:
            _merge_lora(base_path, target, tmp, trainer.processing_class)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    trainer.accelerator.wait_for_everyone()
    return final


def _merge_lora(base_path: str, adapter: Path, dest: Path, tokenizer) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def train(method: str, model: str, data: str | list[dict], out_dir: str, *, lora: bool = False,
          template: str = "chat-boxed", trl: dict | None = None, peft: dict | None = None,
          merge_lora: bool = True, data_dir: str | None = None, resume: bool = False, cache_dir=None) -> str:
    """Train `model` on `data` with SFT or DPO through TRL; return the final plain HF model folder.

    See `mathpo.training` for the row formats and the prompt rule. `trl`: TRL config fields
    (`beta`, `loss_type`, `learning_rate`, `max_steps`, `num_train_epochs`, `per_device_train_batch_size`,
    `gradient_accumulation_steps`, `max_length`, `seed`, `gradient_checkpointing`, `bf16`, ...);
    `peft`: LoraConfig fields (with `lora`); `merge_lora`: merge the adapter into RUN/model;
    `data_dir`: where dataset presets named by `data` live.
    """
    if method not in METHODS:
        raise UserError(f"unknown method '{method}' ({', '.join(METHODS)})")
    from .. import prompts

    prompts.get(template)
    trl, peft = dict(trl or {}), dict(peft or {})
    out = Path(out_dir)
    final = out / "model"
    if resume and (final / "config.json").is_file():
        print(f"train: {final} already exists (finished run); nothing to do")
        return str(final)
    if not resume and (_checkpoints(out / "checkpoints") or final.exists()):
        raise UserError(f"{out} already holds a training run; pass --resume to continue it or pick another --out")
    values = config_values(method, out, lora, trl)
    model_path = models.resolve(model, cache_dir)
    tokenizer = models.load_tokenizer(model_path)
    raw = rows_.read_rows(data, data_dir)
    convert = rows_.preference_rows if method == "dpo" else rows_.sft_rows
    rows = convert(raw, tokenizer, template)
    fit_padding_free(method, values, rows)  # before the record, so train_config.yaml holds what TRL gets

    out.mkdir(parents=True, exist_ok=True)
    record = {"method": method, "model": model, "model_path": model_path, "lora": lora, "template": template,
              "rows": len(rows), "data": data if isinstance(data, str) else f"({len(raw)} rows)",
              "peft": {**LORA_DEFAULTS, **peft} if lora else None, "trl": values,
              "allocator": allocator.active()}  # TCMalloc or not moves peak memory by ~25% (mathpo.allocator)
    atomic_write_text(out / "train_config.yaml", yaml.safe_dump(record, sort_keys=False))

    with cpu_lm_head():  # TRL's module settings are its own again once this run is saved
        trainer = build_trainer(method, model_path, tokenizer, rows, values, lora, peft,
                                callbacks=[MetricsLog(out / "metrics.jsonl")])
        tensorboard_to(trainer, out / "tensorboard")
        checkpoint = None
        if resume:
            found = [p for p in _checkpoints(out / "checkpoints") if _complete(p)]
            checkpoint = str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None
        with full_disk_as_oserror(out):
            trainer.train(resume_from_checkpoint=checkpoint)
            path = save_final(trainer, out, model_path, lora, merge=merge_lora is not False)
    if trainer.accelerator.is_main_process:
        print(f"train: wrote {path} (metrics: {out / 'metrics.jsonl'}, plot: {out / 'metrics.png'})")
    return str(path)
