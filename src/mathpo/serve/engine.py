"""Generation for `mathpo serve`: one served model, k solutions streamed together, behind a gate.

The page and the OpenAI endpoint both call `ServedModel.stream`, which runs `model.generate` in a
thread and yields the k growing completions after every decoding step. Generation is CPU/GPU
bound, so each model runs one request at a time; `Gate` (gate.py) lets a bounded number wait
behind it and refuses the rest at once (`Busy`), so a burst of requests gets a clear "busy"
instead of piling up. A cancelled ticket (client gone) stops its generation at the next token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .. import prompts
from ..errors import UserError
from ..sampling import truncate_at_stop
from ..sampling.calculator import CalculatorLogitsProcessor
from .gate import Busy, Gate, Ticket

__all__ = ["Busy", "Choice", "Gate", "GenParams", "Limits", "ServedModel", "Ticket"]


@dataclass(frozen=True)
class Limits:
    max_new_tokens: int = 512  # per completion, page and API
    max_k: int = 8  # samples per question (page) / `n` (API)
    max_question_chars: int = 2000  # page question box
    max_prompt_chars: int = 16000  # all message contents of one API request


@dataclass(frozen=True)
class GenParams:
    n: int = 1
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Choice:
    text: str = ""
    tokens: int = 0
    finish: str | None = None  # None while generating, then "stop" or "length"
    ids: list[int] = field(default_factory=list, repr=False)


class _StepStreamer:
    """A `generate(streamer=...)` object (the put/end protocol): queues each step's token per row."""

    def __init__(self, ticket: Ticket):
        self.steps: queue.Queue = queue.Queue()
        self.ticket = ticket
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate's first put is the prompt itself
            self._prompt_seen = True
            return
        self.ticket.steps += 1
        self.steps.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.steps.put(None)


class _Cancelled(StoppingCriteria):
    """Stops generation when the consumer went away (closed page, dropped connection)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class ServedModel:
    """A loaded model behind its gate; `name` is what the page shows and the API's `model` field."""

    def __init__(self, name: str, model, tokenizer, template: str = prompts.DEFAULT, max_waiting: int = 8,
                 calculator: bool = False):
        self.name, self.model, self.tok = name, model, tokenizer
        self.template = prompts.get(template)
        self.gate = Gate(max_waiting)
        self.calculator = CalculatorLogitsProcessor(tokenizer) if calculator else None
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos = {t for t in eos + [tokenizer.eos_token_id] if t is not None}

    def question_prompt(self, question: str) -> str:
        return prompts.render(self.tok, question, self.template)

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self.tok, "chat_template", None) is None:
            raise UserError(f"model {self.name} has no chat template")
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False).input_ids)

    def stream(self, prompt: str, params: GenParams, ticket: Ticket | None = None,
               add_special_tokens: bool | None = None) -> Iterator[list[Choice]]:
        """Yield the n choices after each decoding step; the last yield has every `finish` set
        ("cancelled" when `ticket.cancel()` stopped it).

        Takes an admitted ticket (admits one itself, or raises Busy, when none is given). The
        generation worker waits for the model, holds it and gives it back itself; closing (or
        dropping) the iterator cancels the ticket, which stops generation at its next token.
        """
        yield from self._generate(prompt, params, add_special_tokens, ticket or self.gate.admit())

    def _generate(self, prompt: str, params: GenParams, add_special_tokens: bool | None,
                  ticket: Ticket) -> Iterator[list[Choice]]:
        worker = None
        try:
            if add_special_tokens is None:
                add_special_tokens = prompts.add_special_tokens(self.template)
            enc = self.tok(prompt, return_tensors="pt", add_special_tokens=add_special_tokens)
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            streamer = _StepStreamer(ticket)
            sample = params.temperature > 0
            rows = params.n if sample else 1  # greedy: n identical answers, computed once
            stop = tuple(s for s in params.stop if s)
            kwargs = dict(
                **enc, max_new_tokens=params.max_new_tokens, do_sample=sample, num_return_sequences=rows,
                temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                top_k=None, pad_token_id=self.tok.pad_token_id, streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_Cancelled(ticket.cancelled)]),
                stop_strings=list(stop) or None, tokenizer=self.tok if stop else None,
                logits_processor=[self.calculator] if self.calculator is not None else None,
            )
            errors: list[BaseException] = []

            def work():
                # The worker, not the consumer, holds the model: it is given back when generation
                # ends even if the consumer is suspended forever (a client that hung up).
                try:
                    if ticket.start() and ticket.wait_turn():
                        try:
                            if params.seed is not None:
                                torch.manual_seed(params.seed)
                            with torch.inference_mode():
                                self.model.generate(**kwargs)
                        finally:
                            ticket.leave()
                except BaseException as e:  # handed to the consumer below
                    errors.append(e)
                finally:
                    ticket.release()
                    streamer.end()

            worker = threading.Thread(target=work, name=f"generate-{self.name}", daemon=True)
            worker.start()
            choices = [Choice() for _ in range(rows)]
            per_row = params.n // rows
            while (step := streamer.steps.get()) is not None:
                for c, tok in zip(choices, step):
                    if c.finish is not None:
                        continue
                    c.tokens += 1
                    if tok in self.eos:
                        c.finish = "stop"
                        continue
                    c.ids.append(tok)
                    c.text = self.tok.decode(c.ids, skip_special_tokens=True)
                    if stop:
                        c.text, hit = truncate_at_stop(c.text, stop)
                        c.finish = "stop" if hit else None
                yield choices * per_row
            worker.join()
            if errors:
                raise errors[0]
            for c in choices:
                if c.finish is None:
                    c.finish = "cancelled" if ticket.cancelled.is_set() else "length"
            yield choices * per_row
        finally:
            ticket.cancel()
            # Wait (a token at most) so that a closed stream means a free model; never from the
            # worker itself, where the garbage collector may finalize an abandoned stream.
            if worker is not None and worker is not threading.current_thread():
                worker.join()

    def complete(self, prompt: str, params: GenParams, ticket: Ticket | None = None,
                 add_special_tokens: bool | None = None) -> list[Choice]:
        last: list[Choice] = []
        for last in self.stream(prompt, params, ticket, add_special_tokens):  # noqa: B007 (keeps the last)
            pass
        return last
