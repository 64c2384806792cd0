"""Prompt templates, kept as data, and the one function that renders them.

A prompt is the text up to where the model's answer starts (for chat templates: the chat
template with the assistant turn opened, never closed). `render(..., prefix=steps)` appends a
partial answer for prefix sampling (Step-DPO rollouts). Training renders prompts with the same
function, so sampling and training always see the same tokens.
Used by `mathpo sample`, `eval`, `pairs`, `train`, `serve`, `loop` (option `--template`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UserError

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."
HASHES = "Solve it step by step, then write the final answer on its own line as '#### <number>'."
STEP_START = "Let's think step by step.\nStep 1:"
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately "
          "completes the request.\n\n### Instruction:\n{question}\n\n### Response:")


@dataclass(frozen=True)
class Template:
    name: str
    chat: bool  # use the tokenizer's chat template
    user: str = "{question}"  # user turn (chat) or the whole prompt (plain), per question
    answer_start: str = ""  # text the answer begins with (part of the prompt)
    stop: tuple[str, ...] = field(default_factory=tuple)  # where a completion ends (besides EOS)
    answer_format: str = "boxed"  # how the final answer is marked: boxed | hashes

    # Trailing spaces of answer_start are not part of the prompt: BPE tokenizers merge a space into
    # the next word ("Answer:" + " 12" is ':', ' 12'), so a prompt ending in a lone ' ' token is a
    # context that training on prompt + answer never shows. The prompt ends at `prompt_end`, and
    # answers (sampled or written) begin with `lead`.
    @property
    def prompt_end(self) -> str:
        return self.answer_start.rstrip(" ")

    @property
    def lead(self) -> str:
        return self.answer_start[len(self.prompt_end):]

    def as_answer(self, text: str) -> str:
        """A written solution as this template's answers begin (with `lead`, unless it has it)."""
        return text if not self.lead or text[:1].isspace() else self.lead + text


TEMPLATES = {t.name: t for t in [
    Template("chat-boxed", chat=True, user="{question}\n" + BOXED),
    Template("chat-step", chat=True, user="{question}\n" + BOXED, answer_start=STEP_START),
    Template("chat-gsm8k", chat=True, user="{question}\n" + HASHES, answer_format="hashes"),
    Template("gsm8k", chat=False, user="Question: {question}\nAnswer:", answer_start=" ",
             stop=("\n\nQuestion:", "\nQuestion:"), answer_format="hashes"),
    Template("alpaca", chat=False, user=ALPACA, answer_start=" ", stop=("### Instruction",)),
    Template("alpaca-step", chat=False, user=ALPACA, answer_start=" " + STEP_START,
             stop=("### Instruction",)),
]}
DEFAULT = "chat-boxed"


def get(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UserError(f"unknown template '{name}' (templates: {', '.join(TEMPLATES)})") from None


def render(tokenizer, question: str, template: str | Template = DEFAULT, prefix: str = "",
           fewshot: list[dict] = ()) -> str:
    """The prompt text for `question`, ending with the template's `prompt_end`; `prefix` (a partial
    answer, given the template's `lead` if it lacks it) is appended after it.

    `fewshot` rows need `question` and `solution`; for chat templates they become earlier turns.
    """
    t = get(template) if isinstance(template, str) else template
    prefix = t.as_answer(prefix) if prefix else ""

    def fill(q: str) -> str:  # not str.format: instructions contain literal braces (\boxed{})
        return t.user.replace("{question}", q)

    if t.chat:
        if getattr(tokenizer, "chat_template", None) is None:
            raise UserError(f"template {t.name} needs a tokenizer with a chat template; try --template gsm8k")
        messages = []
        for ex in fewshot:
            messages += [{"role": "user", "content": fill(ex["question"])},
                         {"role": "assistant", "content": t.prompt_end + t.as_answer(ex["solution"])}]
        messages.append({"role": "user", "content": fill(question)})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + t.prompt_end + prefix
    shots = "".join(fill(ex["question"]) + t.prompt_end + t.as_answer(ex["solution"]) + "\n\n" for ex in fewshot)
    return shots + fill(question) + t.prompt_end + prefix


def add_special_tokens(template: str | Template) -> bool:
    """Chat templates already carry their special tokens; plain prompts get the tokenizer's BOS."""
    t = get(template) if isinstance(template, str) else template
    return not t.chat
