"""Step-DPO data: splitting real solution texts, rollout localization on deterministic samplers
whose continuations' correctness is known, rectification, the judge parser, pair-file import."""

import json

import pytest

from mathpo.pairs import formats, judge, steps
from mathpo.pairs.locate import RolloutLocator, Task
from mathpo.pairs.split import first_step, prefix, split
from mathpo.sampling import Completion, SamplingParams

# a GSM8K reference solution (train split), verbatim
GSM8K = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
         "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")
# SmolLM2-135M-Instruct output under the chat-step template (the prompt ends with "Step 1:")
SMOL = (" Identify the number of eggs Janet has.\nJanet has 16 eggs.\n\n"
        "Step 2: Calculate the number of eggs she eats for breakfast.\nShe eats 3 eggs, 16 - 3 = 13.\n\n"
        "Step 3: Multiply by the price.\n13 * $2 = $26.\n\nThe answer is \\boxed{26}.")
# a MATH-style answer that writes its own markers
MATHY = ("## Step 1: Expand the square\n$(x+1)^2 = x^2 + 2x + 1$.\n"
         "## Step 2: Compare coefficients\nSo $b = 2$.\n\nThe final answer is: $\\boxed{2}$")


def test_split_real_texts_round_trip():
    for text in (GSM8K, SMOL, MATHY, "", "one line only", "\n\nStep 1: a\nStep 2: b"):
        assert "".join(s.text for s in split(text)) == text
    g = split(GSM8K)
    assert [s.body for s in g] == ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n",
                                   "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n",
                                   "#### 72"]
    s = split(SMOL)
    assert [st.marker for st in s] == ["", "Step 2:", "Step 3:"]
    assert s[1].body == " Calculate the number of eggs she eats for breakfast.\nShe eats 3 eggs, 16 - 3 = 13.\n\n"
    assert s[2].body.endswith("\\boxed{26}.")
    m = split(MATHY)
    assert [st.marker for st in m] == ["## Step 1:", "## Step 2:"]
    assert len(split(SMOL, "lines")) == 7  # blank lines stay with the line before
    assert prefix(s, 0) == "" and prefix(s, 1) == s[0].text + "Step 2:"
    assert prefix(g, 2) == g[0].text + g[1].text and prefix(g, 3) == GSM8K


def test_first_step_of_a_continuation():
    assert first_step(" She eats 3.\nStep 3: Then 13.", "markers") == " She eats 3.\n"
    assert first_step("48/2 = 24\n#### 24", "lines") == "48/2 = 24\n"


GOLD = "9"
WRONG = [" Janet has 16 eggs.\n", "Step 2: She eats 3, 16 - 3 = 13.\n", "Step 3: She bakes 5, 13 - 5 = 8.\n",
         "Step 4: She sells 8 for $1.\n", "Step 5: The answer is \\boxed{8}."]


class KnownSampler:
    """Continuations are correct unless the prompt contains a poisoned step; with `rates`,
    a prompt of depth d gets exactly round(rates[d] * n) correct continuations out of n."""

    def __init__(self, poison=(), rates=None):
        self.poison, self.rates, self.calls, self.prompts = tuple(poison), rates, 0, 0

    def generate(self, prompts_, params, progress=None):
        self.calls += 1
        self.prompts += len(prompts_)
        out = []
        for p in prompts_:
            if self.rates is not None:
                depth = sum(w in p for w in WRONG)
                good = round(self.rates[depth] * params.n)
            else:
                good = 0 if any(w in p for w in self.poison) else params.n
            out.append([Completion(f" So 16 - 7 = 9.\nStep 9: \\boxed{{{GOLD}}}" if i < good else " \\boxed{8}",
                                   5, "stop")
                        for i in range(params.n)])
        return out


def task(text_steps=WRONG, p="PROMPT:", correct=1, samples=4):
    st = split("".join(text_steps))
    return Task(p, st, GOLD, [" A fresh right answer \\boxed{9}"] * correct, samples, "How many?")


PARAMS = SamplingParams(temperature=0.7, max_new_tokens=32)


def test_binary_search_finds_error_with_early_stop():
    sampler = KnownSampler(poison=[WRONG[2]])
    (res,) = RolloutLocator(sampler, PARAMS, rollouts=8, chunk=4).locate([task()])
    # prefixes: 2 (solvable: first chunk of 4 succeeds, stop), 3 (unsolvable: all 8 drawn)
    assert res.error == 3 and res.rollouts == 12
    assert res.rates[2] == [4, 4] and res.rates[3] == [0, 8]
    assert res.successes[2] and not res.successes.get(3)


@pytest.mark.parametrize("bad", range(5))
def test_every_error_position_found_binary_and_linear(bad):
    sampler = KnownSampler(poison=[WRONG[bad]])
    for search in ("binary", "linear"):
        (res,) = RolloutLocator(sampler, PARAMS, rollouts=4, chunk=2, search=search).locate([task()])
        assert res.error == bad + 1, search


def test_solutions_searched_together_in_batched_calls():
    sampler = KnownSampler(poison=[WRONG[1], "POISON-B"])
    other = [" Step one fine.\n", "Step 2: POISON-B here.\n", "Step 3: more.\n", "Step 4: \\boxed{1}"]
    tasks = [task(), task(other), task(WRONG[:3])]
    results = RolloutLocator(sampler, PARAMS, rollouts=4, chunk=4).locate(tasks)
    assert [r.error for r in results] == [2, 2, 2]
    assert sampler.calls <= 3  # one generate call per search round, not per solution


def test_margin_needs_full_estimates_and_linear_search():
    # success rates by number of steps kept: the drop 1.0 -> 0.25 after step 2 exceeds the margin
    sampler = KnownSampler(rates={0: 1.0, 1: 1.0, 2: 0.25, 3: 0.25, 4: 0.0, 5: 0.0})
    (res,) = RolloutLocator(sampler, PARAMS, rollouts=4, search="linear", margin=0.5).locate([task(correct=4)])
    assert res.error == 2 and res.rollouts == 8
    (res,) = RolloutLocator(sampler, PARAMS, rollouts=4, search="linear").locate([task(correct=4)])
    assert res.error == 4
    with pytest.raises(ValueError):
        RolloutLocator(sampler, PARAMS, search="binary", margin=0.5)


def test_unsolved_question_spends_nothing():
    sampler = KnownSampler()
    (res,) = RolloutLocator(sampler, PARAMS).locate([task(correct=0)])
    assert res.error is None and res.reason == "question_never_solved" and sampler.calls == 0


def test_probe_estimates_unsolved_questions_by_rollouts():
    sampler = KnownSampler(poison=[WRONG[3]])
    (res,) = RolloutLocator(sampler, PARAMS, rollouts=4, chunk=4, probe_unsolved=True).locate([task(correct=0)])
    assert res.error == 4 and res.rates[0] == [4, 4] and res.successes[0]
    locator = RolloutLocator(KnownSampler(poison=["PROMPT"]), PARAMS, rollouts=4, probe_unsolved=True)
    (res,) = locator.locate([task(correct=0)])
    assert res.error is None and res.reason == "question_never_solved" and res.rollouts == 4


class CutOff:
    """Every continuation states the gold number but runs out of tokens before an answer marker."""

    def __init__(self, finish):
        self.finish = finish

    def generate(self, prompts_, params, progress=None):
        return [[Completion(" So 16 - 7 = 9", 5, self.finish)] * params.n for _ in prompts_]


def test_a_rollout_cut_at_the_token_limit_has_not_reached_the_answer():
    # graded as text alone, " So 16 - 7 = 9" reads as the answer 9; cut at max_new_tokens it has none
    (stopped,) = RolloutLocator(CutOff("stop"), PARAMS, rollouts=4, chunk=4).locate([task()])
    assert stopped.error == 5 and all(ok for ok, _ in stopped.rates.values())  # every prefix "solvable"
    (cut,) = RolloutLocator(CutOff("length"), PARAMS, rollouts=4, chunk=4).locate([task()])
    assert cut.error == 1 and cut.rates[1] == [0, 4] and not cut.successes[1]  # no rollout reached the answer
    from mathpo.pairs.rectify import sample_fixes

    assert sample_fixes(CutOff("stop"), PARAMS, [("P", "Step 1:", GOLD)], 2) == ([[" So 16 - 7 = 9"] * 2], 2)
    assert sample_fixes(CutOff("length"), PARAMS, [("P", "Step 1:", GOLD)], 2) == ([[]], 2)


def test_a_solution_without_a_final_answer_is_rolled_out_to_its_end():
    # cut off mid-step, it is not known to fail as written: prefix n (its whole text) is rolled out too
    cut = "".join(WRONG[:2]) + "Step 3: She bakes 5, 13 -"

    def cut_task():
        return Task("PROMPT:", split(cut), GOLD, ["x \\boxed{9}"], 4, "", complete=False)

    for search in ("binary", "linear"):
        (fine,) = RolloutLocator(KnownSampler(), PARAMS, rollouts=4, chunk=4, search=search).locate([cut_task()])
        assert fine.error is None and fine.reason == "cut_off_no_wrong_step" and 3 in fine.rates, search
        sampler = KnownSampler(poison=[WRONG[1]])
        (bad,) = RolloutLocator(sampler, PARAMS, rollouts=4, chunk=4, search=search).locate([cut_task()])
        assert bad.error == 2, search  # a real wrong step before the cut is still found
    rows = graded()
    rows[0] = {**rows[0], "completion": cut, "truncated": "length"}
    _, stats = steps.build(rows, KnownSampler(), None, "chat-step", rollouts=4, chunk=4)
    # the cut-off one has no wrong step; the complete wrong one (rows[2]) fails as written: its last step
    assert stats["skipped"]["cut_off_no_wrong_step"] == 1 and stats["locate"]["located"] == 1


def graded(template_prompt="<chat>How many?<assistant>Let's think step by step.\nStep 1:"):
    base = {"id": "q1", "question": "How many?", "gold": GOLD, "prompt": template_prompt, "dataset": "gsm8k"}
    return [{**base, "sample": 0, "completion": "".join(WRONG), "correct": False},
            {**base, "sample": 1, "completion": " Janet has 16.\nStep 2: 16 - 7 = 9 \\boxed{9}", "correct": True},
            {**base, "sample": 2, "completion": "".join(WRONG), "correct": False},  # duplicate
            {**base, "id": "q2", "question": "Hard?", "sample": 0, "completion": " no \\boxed{1}", "correct": False}]


def test_build_step_rows_in_math_step_dpo_schema():
    sampler = KnownSampler(poison=[WRONG[2]])
    rows, stats = steps.build(graded(), sampler, None, "chat-step", rollouts=4, chunk=4)
    assert len(rows) == 1
    r = rows[0]
    assert set(r) == {"prompt", "initial_reason_steps", "chosen", "rejected", "full_chosen", "full_rejected",
                      "answer", "dataset", "id"}
    assert r["prompt"] == "How many?" and r["answer"] == "9" and r["dataset"] == "gsm8k" and r["id"] == "q1"
    assert r["initial_reason_steps"] == "Let's think step by step.\nStep 1:" + WRONG[0] + WRONG[1] + "Step 3:"
    assert r["rejected"] == " She bakes 5, 13 - 5 = 8.\n"
    assert r["chosen"] == " So 16 - 7 = 9.\n"  # first step of a rollout that reached gold, reused
    assert r["full_rejected"] == r["rejected"] + "".join(WRONG[3:])
    assert r["full_chosen"].startswith(r["chosen"]) and "\\boxed{9}" in r["full_chosen"]
    assert stats["wrong_solutions"] == 2 and stats["locate"]["located"] == 1
    assert stats["skipped"] == {"question_never_solved": 1}
    assert stats["locate"]["error_step"] == {"3": 1} and stats["locate"]["error_position"] == {"middle": 1}
    assert stats["rectify"] == {"rollouts": 0, "sampled_for": 0, "reused": 1, "no_fix_found": 0,
                                "chosen_rejected": {"chosen_bad_arithmetic": 0, "chosen_low_support": 0},
                                "bad_arithmetic": {}}
    assert stats["per_question"] == {"0": 1, "1": 1}


def test_build_in_parts_resumes_after_a_kill_with_the_same_result(tmp_path):
    many = [{**r, "id": f"{r['id']}-{k}", "question": f"{r['question']} ({k})"} for k in range(3) for r in graded()]
    full = KnownSampler(poison=[WRONG[2]])
    whole, whole_stats = steps.build(many, full, None, "chat-step", rollouts=4, chunk=4)
    parts = tmp_path / "out.parts.jsonl"

    class Killed(Exception):
        pass

    class DiesAfter(KnownSampler):
        def __init__(self, calls):
            super().__init__(poison=[WRONG[2]])
            self.left = calls

        def generate(self, prompts_, params, progress=None):
            if self.left == 0:
                raise Killed
            self.left -= 1
            return super().generate(prompts_, params, progress)

    with pytest.raises(Killed):  # the first part (q1-0, q2-0) takes 2 calls, then the run dies
        steps.build_in_parts(many, parts, DiesAfter(2), None, "chat-step", questions_per_part=2, rollouts=4, chunk=4)
    saved = [json.loads(x) for x in parts.read_text().splitlines()]
    assert [p["ids"] for p in saved] == [["q1-0", "q2-0"]]
    sampler = KnownSampler(poison=[WRONG[2]])
    rows, stats = steps.build_in_parts(many, parts, sampler, None, "chat-step", questions_per_part=2,
                                       rollouts=4, chunk=4)
    assert rows == whole and len(rows) == 3
    assert stats["parts"] == {"count": 3, "resumed": 1}
    for key in ("rows", "questions", "wrong_solutions", "skipped", "per_question", "rollouts_total"):
        assert stats[key] == whole_stats[key], key
    assert stats["locate"]["rollouts_per_located"] == whole_stats["locate"]["rollouts_per_located"]
    # the finished part was not redone: this run rolled out 2 of the 3 parts' (equal) prompts
    assert sampler.prompts * 3 == full.prompts * 2


def test_build_rectifies_from_questions_samples_and_by_sampling():
    # error at step 1: the question's own correct sample gives the chosen step
    rows, stats = steps.build(graded(), KnownSampler(poison=[WRONG[0]]), None, "chat-step", rollouts=4)
    assert rows[0]["chosen"] == " Janet has 16.\n"
    assert rows[0]["initial_reason_steps"] == "Let's think step by step.\nStep 1:"
    # judge-located errors have no rollouts to reuse: rectification samples rectify_n
    verdicts = "Step 1: correct\nStep 2: correct\nStep 3: incorrect"
    fake = judge.JudgeLocator("http://x", "m", post=lambda p: {"choices": [{"message": {"content": verdicts}}]})
    rows, stats = steps.build(graded(), KnownSampler(), None, "chat-step", locator="judge", judge=fake, rectify_n=3)
    assert rows[0]["rejected"] == " She bakes 5, 13 - 5 = 8.\n" and stats["rectify"]["rollouts"] == 3
    # the judge needs no solved samples, so q2 is judged too (its one step is not in the verdicts)
    assert stats["locate"]["judge_calls"] == 2 and stats["skipped"] == {"judge_found_no_error": 1}


# the demo's chosen step: its rollout reached the gold answer, yet it writes 16 where it computed 8
BAD_FIRST = " She has 16 - 8 = <<16-8=8>>16 left.\nStep 9: \\boxed{9}"
GOOD_FIRST = " So 16 - 7 = <<16-7=9>>9.\nStep 9: \\boxed{9}"


class FirstSteps(KnownSampler):
    """Every continuation of an unpoisoned prompt reaches gold; the k-th one writes `firsts[k]` (the
    last one repeated) as its first step, and the rectification's draws (seed + 7919) `fixes[k]`."""

    def __init__(self, firsts, fixes=None):
        super().__init__(poison=[WRONG[2]])
        self.firsts, self.fixes = firsts, fixes or firsts

    def generate(self, prompts_, params, progress=None):
        firsts = self.fixes if params.seed >= 7919 else self.firsts
        out = super().generate(prompts_, params, progress)
        return [[Completion(firsts[min(i, len(firsts) - 1)], 5, "stop") if "boxed{9}" in c.text else c
                 for i, c in enumerate(comps)] for comps in out]


def test_chosen_step_with_bad_arithmetic_is_skipped_and_counted():
    from mathpo.pairs.summary import format_summary

    # the locator's first success from the prefix before the error begins with the demo's bad step
    rows, stats = steps.build(graded(), FirstSteps([BAD_FIRST, GOOD_FIRST]), None, "chat-step", rollouts=4, chunk=4)
    assert [r["chosen"] for r in rows] == [" So 16 - 7 = <<16-7=9>>9.\n"]  # the next candidate
    assert stats["rectify"]["chosen_rejected"] == {"chosen_bad_arithmetic": 1, "chosen_low_support": 0}
    assert stats["rectify"]["bad_arithmetic"] == {"wrong_repeat": 1}
    assert stats["rectify"]["sampled_for"] == 0
    assert "chosen steps rejected: chosen_bad_arithmetic 1 (wrong_repeat 1)" in format_summary(stats)
    # every reused success is bad: rectification samples, and the bad step is counted once, not per copy
    rows, stats = steps.build(graded(), FirstSteps([BAD_FIRST], [GOOD_FIRST.replace("<<16-7=9>>9", "<<16-7=9>>")]),
                              None, "chat-step", rollouts=4, chunk=4, rectify_n=3)
    assert rows == [] and stats["rectify"]["sampled_for"] == 1 and stats["rectify"]["rollouts"] == 3
    assert stats["rectify"]["bad_arithmetic"] == {"wrong_repeat": 1, "no_repeat": 1}
    assert stats["skipped"]["no_fix_found"] == 1
    rows, stats = steps.build(graded(), FirstSteps([BAD_FIRST], [GOOD_FIRST]), None, "chat-step",
                              rollouts=4, chunk=4, rectify_n=3)
    assert [r["chosen"] for r in rows] == [" So 16 - 7 = <<16-7=9>>9.\n"]
    assert stats["rectify"]["chosen_rejected"]["chosen_bad_arithmetic"] == 1


def test_min_chosen_support_needs_the_step_in_several_successes():
    lone = " So 9 are left.\nStep 9: \\boxed{9}"
    firsts = [lone, GOOD_FIRST, GOOD_FIRST.replace("\nStep 9", "  \nStep 9")]  # same step, other spacing
    rows, stats = steps.build(graded(), FirstSteps(firsts), None, "chat-step", rollouts=4, chunk=4)
    assert rows[0]["chosen"] == " So 9 are left.\n"  # off by default: the first success's step
    rows, stats = steps.build(graded(), FirstSteps(firsts), None, "chat-step", rollouts=4, chunk=4,
                              min_chosen_support=3)
    assert rows[0]["chosen"] == " So 16 - 7 = <<16-7=9>>9.\n"  # begins 3 of the 4 successes
    assert stats["rectify"]["chosen_rejected"] == {"chosen_bad_arithmetic": 0, "chosen_low_support": 1}
    rows, stats = steps.build(graded(), FirstSteps(firsts), None, "chat-step", rollouts=4, chunk=4, rectify_n=0,
                              min_chosen_support=4)
    assert rows == [] and stats["rectify"]["chosen_rejected"]["chosen_low_support"] == 2


def test_min_chosen_support_is_a_checked_step_option():
    from mathpo.errors import UserError
    from mathpo.pairs.step_options import StepPairOptions

    assert StepPairOptions.from_dict({}).min_chosen_support == 1
    assert StepPairOptions.from_dict({"min_chosen_support": 2}).min_chosen_support == 2
    with pytest.raises(UserError, match="min_chosen_support"):
        StepPairOptions.from_dict({"min_chosen_support": 0}, "step.pairs.")


@pytest.mark.parametrize("reply,verdicts", [
    ("Step 1: correct\nStep 2: Incorrect - 16 - 3 is 13 not 12\nStep 3: neutral",
     {1: "correct", 2: "incorrect", 3: "neutral"}),
    ("**Step 1** - Correct.\n**Step 2** - This step is wrong.", {1: "correct", 2: "incorrect"}),
    ("1. correct\n2. correct\n3) not correct", {1: "correct", 2: "correct", 3: "incorrect"}),
    ('Here you go: {"1": "correct", "2": "incorrect"}', {1: "correct", 2: "incorrect"}),
    ('```json\n[{"step": 1, "verdict": "correct"}, {"step": 2, "verdict": "neutral"}]\n```',
     {1: "correct", 2: "neutral"}),
    ("Everything checks out until the first incorrect step is step 3.", {1: "correct", 2: "correct", 3: "incorrect"}),
    ("I cannot judge this.", {}),
])
def test_judge_reply_parser(reply, verdicts):
    assert judge.parse_verdicts(reply) == verdicts


def test_first_error_counts_neutral_as_the_paper_did():
    v = {1: "correct", 2: "neutral", 3: "incorrect"}
    assert judge.first_error(v, 3) == 2 and judge.first_error(v, 3, neutral_is_error=False) == 3
    assert judge.first_error({1: "correct"}, 2) is None


def test_judge_over_http(tmp_path):
    """The real urllib path against a local OpenAI-compatible stub (no network)."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            out = json.dumps({"choices": [{"message": {"content": "Step 1: correct\nStep 2: wrong"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        loc = judge.JudgeLocator(f"http://127.0.0.1:{server.server_port}/v1", "judge-1", api_key="k")
        (res,) = loc.locate([task()])
    finally:
        server.shutdown()
    assert res.error == 2
    path, auth, body = seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "judge-1"
    assert "Step 3: She bakes 5, 13 - 5 = 8." in body["messages"][0]["content"]


STEP_ROW = {"dataset": "MATH_Rephrased", "prompt": "What is 2+2?",
            "initial_reason_steps": "Let's think step by step.\nStep 1: We add.\nStep 2:",
            "chosen": " 2+2=4.\n", "rejected": " 2+2=5.\n", "full_chosen": " 2+2=4.\nThe answer is 4.",
            "full_rejected": " 2+2=5.\nThe answer is 5.", "answer": "4"}


def test_import_math_step_dpo_and_dpo_st_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([STEP_ROW, STEP_ROW]), tmp_path / "train-0.parquet")
    kind, rows = formats.load_pairs(tmp_path / "train-0.parquet")
    assert kind == "step" and rows[0] == {**STEP_ROW, "id": "1"} and rows[1]["id"] == "2"
    dpo_st = [{"prompt": "Q: 1+1?\nA:", "chosen": " 2", "rejected": " 3"}]
    (tmp_path / "dpo.json").write_text(json.dumps(dpo_st))
    assert formats.load_pairs(tmp_path / "dpo.json") == ("dpo", [{**dpo_st[0], "id": "1"}])
    (tmp_path / "cols.json").write_text(json.dumps({"prompt": ["p"], "completion": ["c"]}))
    assert formats.load_pairs(tmp_path / "cols.json")[0] == "rft"
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    with pytest.raises(formats.UserError, match="not pairs"):
        formats.load_pairs(tmp_path / "bad.jsonl")


def test_step_prompt_is_what_rollouts_continued(tokenizer):
    from mathpo import prompts

    text = formats.step_prompt(tokenizer, STEP_ROW, "chat-step")
    assert text == prompts.render(tokenizer, "What is 2+2?", "chat-step", prefix=" We add.\nStep 2:")


@pytest.mark.parametrize("reply,verdicts", [
    # the verdict is the first verdict word of the step's line; the reason after it does not flip it
    ("Step 1: correct\nStep 2: correct, nothing wrong.", {1: "correct", 2: "correct"}),
    ("Step 1: Correct - no mistake here.\nStep 2: Incorrect: the correct total is 12, not 13.",
     {1: "correct", 2: "incorrect"}),
    ("Step 1: correct (no errors)\nStep 2: wrong, although the method is right", {1: "correct", 2: "incorrect"}),
    ("Step 1: neutral, but not wrong\nStep 2: incorrect", {1: "neutral", 2: "incorrect"}),
    ("Step 1: The right triangle has legs 3 and 4, so the area is wrong.", {1: "incorrect"}),
    ("Step 1: nothing wrong here\nStep 2: no mistakes\nStep 3: not correct", {1: "correct", 2: "correct",
                                                                          3: "incorrect"}),
    ("Step 1: error-free\nStep 2: there are errors in the sum", {1: "correct", 2: "incorrect"}),
    # JSON values likewise
    ('{"1": "correct (no mistake)", "2": "incorrect"}', {1: "correct", 2: "incorrect"}),
    ('[{"step": 1, "verdict": "correct - nothing is wrong"}, {"step": 2, "verdict": "incorrect, the correct '
     'value is 9"}]', {1: "correct", 2: "incorrect"}),
])
def test_judge_reply_parser_reads_the_first_verdict_word(reply, verdicts):
    assert judge.parse_verdicts(reply) == verdicts


def test_judge_first_error_with_reasons_after_the_verdict():
    reply = "Step 1: correct, nothing wrong.\nStep 2: correct (no mistake)\nStep 3: incorrect, the correct sum is 9"
    assert judge.first_error(judge.parse_verdicts(reply), 3) == 3
