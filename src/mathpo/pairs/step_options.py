"""The options of Step-DPO pair building, in one type for `mathpo pairs --kind step` (each field is a
flag: `--rectify-n`, `--judge-url`, ...) and for `mathpo loop` (the `step.pairs` section): their
defaults, their checks, the judge's set-up, and the call of `pairs.steps.build_in_parts`.

    opts = StepPairOptions.from_dict({"rollouts": 4, "locator": "judge", "judge_url": URL, "judge_model": M})
    rows, stats = opts.build(graded, parts_path, backend, tokenizer, template)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..config import build_dataclass
from ..errors import UserError
from .split import MODES


def _opt(default, help: str, **argparse):
    return field(default=default, metadata={"help": help, "argparse": argparse})


@dataclass
class StepPairOptions:
    locator: str = _opt("rollout", "how the first wrong step is found", choices=["rollout", "judge"])
    rollouts: int = _opt(8, "continuations per prefix to estimate its success rate", type=int)
    chunk: int = _opt(4, "rollouts drawn at a time (stop at the first success)", type=int)
    search: str = _opt("binary", "how prefixes are searched", choices=["binary", "linear"])
    margin: float | None = _opt(None, "also an error where the success rate drops by more than this "
                                "(needs search linear)", type=float)
    rectify_n: int = _opt(8, "continuations sampled to find a correct step when the rollouts found none", type=int)
    pairs_per_error: int = _opt(1, "chosen steps per located error at most", type=int)
    min_chosen_support: int = _opt(1, "a chosen step must begin at least this many of the successful "
                                   "continuations it is picked from (1: off)", type=int)
    probe_unsolved: bool = _opt(False, "roll out questions with no correct sample from the bare prompt "
                                "instead of skipping them", action="store_true")
    split: str = _opt("auto", "how solutions are cut into steps", choices=list(MODES))
    max_per_question: int | None = _opt(None, "wrong solutions per question at most", type=int)
    temperature: float = _opt(0.7, "rollout temperature", type=float)
    top_p: float = _opt(0.95, "rollout nucleus sampling", type=float)
    max_new_tokens: int = _opt(256, "tokens per rollout at most", type=int)
    seed: int = _opt(0, "rollout seed", type=int)
    calculator: bool = _opt(False, "force <<expr=result>> annotations in rollouts to the calculator's result",
                            action="store_true")
    questions_per_part: int = _opt(32, "questions per unit of work saved to OUT.parts.jsonl "
                                   "(a killed run resumes there)", type=int)
    dataset_name: str | None = _opt(None, "the rows' `dataset` column (default: their own `dataset` or unknown)")
    judge_url: str | None = _opt(None, "judge: OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    judge_model: str | None = _opt(None, "judge: model name sent to the endpoint")
    judge_key_env: str = _opt("OPENAI_API_KEY", "judge: environment variable holding the API key")

    @classmethod
    def from_dict(cls, values: dict, where: str = "") -> StepPairOptions:
        """Options from a mapping (a loop config's `step.pairs`, or the CLI's resolved flags),
        checked; `where` prefixes the key in error messages."""
        return build_dataclass(cls, values, where, "step-pair option").check(where)

    def check(self, where: str = "") -> StepPairOptions:
        if (self.rollouts < 1 or self.chunk < 1 or self.rectify_n < 0 or self.pairs_per_error < 1
                or self.questions_per_part < 1 or self.min_chosen_support < 1):
            raise UserError(f"{where}rollouts, chunk, pairs_per_error, questions_per_part, min_chosen_support "
                            f"must be >= 1 and {where}rectify_n >= 0")
        if self.margin is not None and self.search != "linear":
            raise UserError(f"{where}margin compares neighbouring steps: use it with search linear")
        if self.locator not in ("rollout", "judge"):
            raise UserError(f"{where}locator must be rollout or judge, got {self.locator!r}")
        if self.split not in MODES:
            raise UserError(f"{where}split must be one of {', '.join(MODES)}, got {self.split!r}")
        if self.locator == "judge" and (not self.judge_url or not self.judge_model):
            raise UserError(f"{where}locator judge needs {where}judge_url and {where}judge_model")
        return self

    def judge(self):
        """The judge locator (an OpenAI-compatible chat endpoint), or None for rollouts."""
        if self.locator != "judge":
            return None
        from .judge import JudgeLocator

        return JudgeLocator(self.judge_url, self.judge_model, os.environ.get(self.judge_key_env))

    def build(self, graded: list[dict], parts_path: str | Path, backend, tokenizer, template: str,
              progress=None) -> tuple[list[dict], dict]:
        """`steps.build_in_parts` with these options (rows, stats)."""
        from . import steps

        return steps.build_in_parts(
            graded, parts_path, backend, tokenizer, template, questions_per_part=self.questions_per_part,
            locator=self.locator, judge=self.judge(), rollouts=self.rollouts, chunk=self.chunk,
            search=self.search, margin=self.margin, rectify_n=self.rectify_n, pairs_per_error=self.pairs_per_error,
            min_chosen_support=self.min_chosen_support,
            split_mode=self.split, temperature=self.temperature, top_p=self.top_p,
            max_new_tokens=self.max_new_tokens, seed=self.seed, max_per_question=self.max_per_question,
            probe_unsolved=bool(self.probe_unsolved), calculator=bool(self.calculator), dataset=self.dataset_name,
            progress=progress)

    @classmethod
    def add_flags(cls, opts) -> None:
        """One `--flag` per field on a `config.Options` (mathpo pairs)."""
        for f in dataclasses.fields(cls):
            extra = dict(f.metadata["argparse"])
            help = f.metadata["help"] if f.name.startswith("judge") else f"step: {f.metadata['help']}"
            opts.add("--" + f.name.replace("_", "-"), default=f.default, help=help, **extra)

    @classmethod
    def from_flags(cls, cfg: dict) -> StepPairOptions:
        return cls.from_dict({f.name: cfg[f.name] for f in dataclasses.fields(cls)})
