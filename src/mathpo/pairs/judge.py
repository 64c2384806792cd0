"""Locate the first wrong step with a judge model behind any OpenAI-compatible chat endpoint
(`mathpo pairs --kind step --locator judge --judge-url URL --judge-model NAME`), as Step-DPO did
with GPT-4: the judge sees the question, the gold answer and the numbered steps and gives one
verdict per step; the first step judged incorrect (or neutral, as the paper counted them) is
the error. The judge's reply is data: it is parsed, never run.

Parsing is forgiving: a JSON object or list anywhere in the reply ({"1": "correct", ...},
[{"step": 1, "verdict": "incorrect"}, ...]), else lines like "Step 2: Incorrect - ...",
"**Step 3** - neutral", "2. correct", else a sentence "the first incorrect step is step 3".
A step's verdict is the first verdict word of its line or JSON value: the reason after it
("correct, nothing wrong", "incorrect - the correct sum is 12") does not change it.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request

from ..errors import UserError
from .locate import Result, Task

PROMPT = """You are checking a solution to a math problem one step at a time.

Question:
{question}

The correct final answer is: {gold}

Solution steps:
{steps}

For each step, decide whether it is correct (right reasoning and arithmetic), incorrect (contains
a mistake), or neutral (adds nothing towards the answer). Reply with one line per step, exactly
in the form "Step k: correct", "Step k: incorrect" or "Step k: neutral"."""

# The verdict vocabulary. A phrase's verdict is its first verdict word (see `_word`); phrases that
# negate one ("not correct", "no mistake", "error-free") are one verdict and are tried first.
_VERDICT = re.compile(
    r"\b(?:(?P<not_bad>not\s+(?:incorrect|wrong|erroneous|flawed|invalid)|nothing\s+(?:is\s+)?wrong"
    r"|no\s+(?:errors?|mistakes?|issues?|problems?)|error[-\s]free|without\s+(?:errors?|mistakes?))"
    r"|(?P<not_good>not\s+(?:correct|right|valid|true|ok|okay|fine))"
    r"|(?P<bad>incorrect|wrong|errors?|erroneous|mistaken|mistakes?|invalid|false|flawed)"
    r"|(?P<neutral>neutral|unnecessary|irrelevant|redundant)"
    r"|(?P<good>correct|right(?!\s*-?\s*(?:triangle|angle|angled|side|hand|isosceles|circular|prism|cone))"
    r"|valid|true|ok|okay|fine))\b", re.I)
_LABELS = {"not_bad": "correct", "not_good": "incorrect", "bad": "incorrect", "neutral": "neutral", "good": "correct"}
_LINE = re.compile(r"^\W*(?:step\W*)?(\d+)\s*(?:\*\*)?\s*[:.)\-\u2013\u2014]+\s*(.*)$", re.I)
_FIRST = re.compile(r"first\s+(?:incorrect|wrong|erroneous)\s+step\s+(?:is\s+)?(?:step\s*)?(\d+)", re.I)


def _word(text: str) -> str | None:
    """The verdict a phrase gives: that of its first verdict word, so "correct, nothing wrong" and
    "correct (no mistake)" are correct and "incorrect: the correct total is 12" is incorrect
    ('incorrect' never matches as 'correct': words are matched whole). None when it has none."""
    m = _VERDICT.search(text)
    return _LABELS[m.lastgroup] if m else None


def _json_verdicts(reply: str) -> dict[int, str]:
    for m in re.finditer(r"[\[{]", reply):
        try:
            obj, _ = json.JSONDecoder().raw_decode(reply[m.start():])
        except json.JSONDecodeError:
            continue
        items = []
        if isinstance(obj, dict):
            items = [(k, v) for k, v in obj.items()]
        elif isinstance(obj, list):
            for i, x in enumerate(obj, 1):
                if isinstance(x, dict):
                    k = x.get("step", i)
                    v = next((x[f] for f in ("verdict", "label", "judgment", "result") if f in x), None)
                    items.append((k, v))
                else:
                    items.append((i, x))
        out = {}
        for k, v in items:
            num = re.search(r"\d+", str(k))
            label = _word(str(v)) if v is not None else None
            if num and label:
                out[int(num.group())] = label
        if out:
            return out
    return {}


def parse_verdicts(reply: str) -> dict[int, str]:
    """{step number: 'correct' | 'incorrect' | 'neutral'} from a judge's reply."""
    found = _json_verdicts(reply)
    if found:
        return found
    for line in reply.splitlines():
        m = _LINE.match(line.strip())
        if m:
            label = _word(m.group(2))
            if label and int(m.group(1)) not in found:
                found[int(m.group(1))] = label
    if not found:
        m = _FIRST.search(reply)
        if m:
            k = int(m.group(1))
            found = {i: "correct" for i in range(1, k)} | {k: "incorrect"}
    return found


def first_error(verdicts: dict[int, str], n_steps: int, neutral_is_error: bool = True) -> int | None:
    bad = {"incorrect", "neutral"} if neutral_is_error else {"incorrect"}
    return next((k for k in range(1, n_steps + 1) if verdicts.get(k) in bad), None)


class JudgeLocator:
    """Same `locate(tasks)` as RolloutLocator; one chat request per wrong solution."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 120,
                 neutral_is_error: bool = True, post=None):
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.timeout, self.neutral_is_error = model, timeout, neutral_is_error
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._post = post or self._http_post
        self.calls = 0

    def _http_post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, json.dumps(payload).encode(), headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
            raise UserError(f"judge endpoint {self.url} failed: {e}") from None

    def ask(self, task: Task) -> str:
        steps = "\n".join(f"Step {k}: {s.body.strip()}" for k, s in enumerate(task.steps, 1))
        content = PROMPT.format(question=task.question, gold=task.gold, steps=steps)
        reply = self._post({"model": self.model, "temperature": 0,
                            "messages": [{"role": "user", "content": content}]})
        self.calls += 1
        try:
            return reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(f"judge endpoint {self.url} sent no chat completion: {str(reply)[:200]}") from None

    def locate(self, tasks: list[Task], progress=None) -> list[Result]:
        results = []
        for task in tasks:
            verdicts = parse_verdicts(self.ask(task))
            err = first_error(verdicts, len(task.steps), self.neutral_is_error)
            reason = None if err else ("judge_unparsed" if not verdicts else "judge_found_no_error")
            # rectification samples from the prefix before the error; prefix 0 has the question's samples
            results.append(Result(error=err, reason=reason, successes={0: list(task.correct_samples)}))
            if progress:
                progress(1)
        return results
