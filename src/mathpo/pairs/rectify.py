"""Rectification for Step-DPO (`mathpo pairs --kind step`): given a located wrong step, find
correct replacements for it written by the model itself.

From the prefix before the error (question + steps 1..e-1 + "Step e:" marker) the model's
continuations that reach the gold answer are candidates; the rollout locator already drew some
(reused, free), and `rectify_n` more are sampled only for errors that have none. chosen = the
first step of such a continuation, rejected = the wrong step; a chosen step equal to the
rejected one (after whitespace) or to an earlier chosen step is dropped.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import grading
from ..sampling import SamplingParams
from .split import first_step


def candidates(rejected: str, continuations: list[str], mode: str, limit: int) -> list[tuple[str, str]]:
    """Up to `limit` (chosen step, full continuation) pairs, first come first kept."""
    seen = {rejected.strip()}
    out = []
    for cont in continuations:
        step = first_step(cont, mode)
        key = step.strip()
        if not key or key in seen:
            continue
        seen.add(key)
        out.append((step, cont))
        if len(out) >= limit:
            break
    return out


def sample_fixes(backend, params: SamplingParams, jobs: list[tuple[str, str, str]], n: int,
                 grade: Callable[[str, str], dict] = grading.grade) -> tuple[list[list[str]], int]:
    """For each (prompt, answer_prefix, gold) job sample n continuations; return those reaching
    gold, per job, and the rollouts spent."""
    if not jobs or n < 1:
        return [[] for _ in jobs], 0
    p = SamplingParams(**{**params.as_dict(), "n": n, "seed": params.seed + 7919, "stop": tuple(params.stop)})
    outs = backend.generate([prompt + head for prompt, head, _ in jobs], p)
    fixes = [[c.text for c in comps if grade(head + c.text, gold)["correct"]]
             for (_, head, gold), comps in zip(jobs, outs)]
    return fixes, n * len(jobs)
