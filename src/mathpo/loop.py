"""The self-training loop (`mathpo loop CONFIG.yaml [key=value ...]`): DPO-ST and Step-DPO as a
straight line of stage calls, resumable by stage.

Recipes (`recipe:` one name or a list, run in that order inside every iteration; or `arms:`, several
recipe lists compared in one run, see mathpo.loop_arms):
- `dpo-st`: sample n per training question from the current model, grade, DPO pairs (pooled with
  earlier iterations), DPO (reference = the current model), sample from the DPO model, RFT set
  (pooled), SFT (from the base model as DPO-ST does, or continuing; `sft.restart`), evaluate.
- `step-dpo`: sample solutions, grade, step pairs (rollout localization + rectification),
  Step-DPO training, evaluate.
- `st`: conventional self-training, DPO-ST's baseline (mathpo.loop_st): sample sample.n + rft.n
  per question from the current model (as many as DPO-ST's two sampling stages), RFT set, SFT.
An optional warm-up SFT on labelled data runs first (iter_0). Every stage writes into
`OUT/NAME/iter_K/STAGE/` and ends by writing `DONE.json` (its stats and seconds) atomically; a
re-run skips stages with a DONE.json and redoes the others from their own resumable state
(sampling appends, training checkpoints), so a killed loop re-run with the same command resumes.
Consecutive stages on the same model (eval after training, then sampling from that model) share one
loaded model and backend (`sampling.reuse.BackendCache`); every eval samples all test sets in one
call. Each DONE.json records its overheads (model load or conversion, backend start, grading,
training loop) for the report's time table.

Curriculum (`curriculum.enabled`): the pass rate of the current model on each training question
(from this iteration's samples) orders the pair/RFT rows easy to hard (trained in that order) and
optionally keeps only questions with `min_pass <= pass rate <= max_pass`.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from . import data, grading, models, runlock
from .curriculum import apply_curriculum, curriculum_order, curriculum_train
from .data import synth
from .errors import UserError
from .evaluation import evaluate_sets
from .grading.metrics import summarize
from .records import atomic_write_text, read_json, read_jsonl, write_json, write_jsonl
from .sampling import BackendSettings, SamplingParams
from .sampling.reuse import BackendCache
from .sampling.sample_stage import sample_records

DONE = "DONE.json"
ORDER = "stages.json"  # the run's stages in the order the loop reached them (the report's order)
# evaluation folders are eval_<point> (eval.after's names); runs made before that used these
LEGACY_EVAL = {"eval_warmup_sft": "eval", "eval_step_dpo": "eval_step"}


class Run:
    """The run folder and its stages: `stage(rel, fn)` runs fn(dir) once, then records DONE.json."""

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.root = Path(cfg["out"]) / cfg["name"]
        self.ran: list[str] = []  # stages run (not skipped) by this process
        self.order: list[str] = read_json(self.root / ORDER) if (self.root / ORDER).is_file() else []
        # the model of the last sampling stage and its backend, kept while the next stages use it too
        self.held = BackendCache(BackendSettings.of(cfg), cfg.get("dtype", "auto"), cfg.get("device", "auto"),
                                 cfg.get("cache_dir"), ray=cfg.get("ray"))

    def _reached(self, rel: str) -> None:
        if rel not in self.order:
            self.order.append(rel)
            write_json(self.root / ORDER, self.order)

    def stage(self, rel: str, fn) -> dict:
        d = self.root / rel
        old = d.parent / LEGACY_EVAL.get(d.name, d.name)
        if old != d and (old / DONE).is_file() and not d.exists():
            old.rename(d)  # a run folder from before the eval_<point> names: adopt its result
        if (d / DONE).is_file():
            try:
                stats = read_json(d / DONE)
                print(f"[{rel}] done before ({stats.get('seconds', 0):.0f} s); skipped")
                self._reached(rel)
                return stats
            except UserError as e:  # torn (a crash where renames are not atomic): the stage is redone
                print(f"[{rel}] {e}; redoing the stage")
                (d / DONE).unlink()
        d.mkdir(parents=True, exist_ok=True)
        print(f"[{rel}] running")
        t0 = time.time()
        stats = {"stage": rel, **(fn(d) or {})}
        stats["seconds"] = round(time.time() - t0, 1)
        write_json(d / DONE, stats)
        self.ran.append(rel)
        self._reached(rel)
        print(f"[{rel}] finished in {stats['seconds']:.0f} s")
        return stats


# ---- data -------------------------------------------------------------------------------------

def load_spec(spec: dict, root: str | None, role: str = "test") -> list[dict]:
    """A data spec: `{synth: {n, steps, seed, split}}` or `{dataset, split, limit}` (see data.load),
    checked when the config loads (loop_config.check_data_spec). A split left out is the role's own:
    `train` for train_data, `test` for a test set, so neither ever reads the other's by default."""
    if "synth" in spec:
        s = spec["synth"] or {}
        return synth.generate(s.get("n", 200), synth.parse_steps(s.get("steps", "1-4")), s.get("seed", 0),
                              s.get("split") or role)
    if not spec.get("dataset"):
        raise UserError(f"data spec {spec} needs 'dataset' or 'synth'")
    return data.load(spec["dataset"], spec.get("split") or role, spec.get("limit"), root or spec.get("data_dir"))


def make_data(cfg: dict, d: Path) -> dict:
    train = load_spec(cfg["train_data"], cfg["data_dir"], "train")
    write_jsonl(d / "train.jsonl", train)
    stats = {"train": len(train), "test_sets": {}, "test_in_train": {}}
    seen = {_question_key(r) for r in train}
    for name, spec in cfg["test_sets"].items():
        try:
            rows = load_spec(spec, cfg["data_dir"], "test")
        except UserError as e:
            if not spec.get("optional"):
                raise
            print(f"  test set {name} skipped: {e}")
            continue
        write_jsonl(d / "test" / f"{name}.jsonl", rows)
        stats["test_sets"][name] = len(rows)
        # a test question that is also a training question measures recall, not reasoning: said, not hidden
        leaked = sum(_question_key(r) in seen for r in rows)
        stats["test_in_train"][name] = leaked
        if leaked:
            print(f"  warning: test set {name}: {leaked} of {len(rows)} questions are also in train_data")
    return stats


def _question_key(r: dict) -> str:
    return " ".join(str(r.get("question", "")).split()).lower()


# ---- model-using stages -----------------------------------------------------------------------

def _params(cfg: dict, section: dict, seed: int) -> SamplingParams:
    return SamplingParams(n=section["n"], temperature=section["temperature"], top_p=section.get("top_p", 1.0),
                          max_new_tokens=section["max_new_tokens"], seed=seed,
                          calculator=bool(section.get("calculator", cfg["calculator"])))


def sample_stage(cfg: dict, held: BackendCache, model: str, records: list[dict], section: dict, template: str,
                 seed: int, d: Path) -> dict:
    """Sample and grade: samples.jsonl (resumable) then graded.jsonl."""
    loaded, backend, cost = held.get(model, template)
    stats = sample_records(records, backend, loaded.tokenizer, _params(cfg, section, seed), d / "samples.jsonl",
                           model, template, chunk=cfg["chunk"])
    ids = {r["id"] for r in records}
    t0 = time.perf_counter()
    graded = grading.grade_rows([r for r in read_jsonl(d / "samples.jsonl") if r["id"] in ids], cfg["workers"])
    cost["grading_s"] = round(time.perf_counter() - t0, 2)
    write_jsonl(d / "graded.jsonl", graded)
    m = summarize(graded, [section["n"]] if section["n"] > 1 else [])
    return {"questions": len(records), "samples": len(graded), "accuracy": m.get("accuracy"),
            "truncated": m.get("truncated"), "pass@n": m.get(f"pass@{section['n']}"), "tokens": stats["tokens"],
            "sample_seconds": stats["seconds"], "overheads": cost}


def eval_stage(cfg: dict, held: BackendCache, model: str, d: Path, root: Path) -> dict:
    """Evaluate `model` on every test set of the run folder `root` (the same questions at every stage,
    so changes are paired), all sets in one sampling call; prints one line per set."""
    ev = cfg["eval"]
    loaded, backend, cost = held.get(model, cfg["template"])
    sets = {p.stem: read_jsonl(p) for p in sorted((root / "data" / "test").glob("*.jsonl"))}
    summaries, spent = evaluate_sets(sets, backend, loaded.tokenizer, _params(cfg, ev, cfg["seed"]), d, model,
                                     cfg["template"], ks=ev["ks"], workers=cfg["workers"])
    out = {}
    for name, s in summaries.items():
        out[name] = {k: v for k, v in s.items() if k in ("n", "accuracy", "accuracy_ci95", "strict_accuracy")
                     or k.startswith(("pass@", "maj@"))}
        lo, hi = s["accuracy_ci95"]
        print(f"  {d.relative_to(root)}: {name} accuracy {100 * s['accuracy']:.1f}% "
              f"[{100 * lo:.1f}, {100 * hi:.1f}] (n={s['n']})")
    return {"model": model, "results": out, "sample_seconds": spent["sample_s"],
            "overheads": {**cost, "grading_s": spent["grading_s"]}}


def train_stage(cfg: dict, held: BackendCache, method: str, model: str, rows: list[dict], section: dict, d: Path,
                template: str | None = None, extra: dict | None = None) -> dict:
    from .training import train

    if not rows:
        print("  no training rows: model unchanged")
        return {"model": model, "rows": 0, "trained": False}
    held.release()  # training loads its own copy and needs the memory; its model is a new one
    write_jsonl(d / "train_rows.jsonl", rows)
    args = {"method": method, "model": model, "lora": bool(section["lora"]), "template": template or cfg["template"],
            # the run's seed also seeds training (data order), so `seed=1` repeats the whole loop, not
            # only its sampling; an override's own seed wins
            "trl": {"seed": cfg["seed"], **section["overrides"], **(extra or {})}, "peft": section["peft"],
            "merge_lora": section["merge_lora"]}
    if cfg["launcher"]:
        path = _launch(cfg, d, **args)
    else:
        path = train(data=str(d / "train_rows.jsonl"), out_dir=str(d), resume=True, cache_dir=cfg["cache_dir"],
                     **args)
    shutil.rmtree(d / "checkpoints", ignore_errors=True)  # the final model is saved; optimizer states are GBs
    logs = read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").is_file() else []
    steps = [r for r in logs if "loss" in r]
    last = {k: v for k, v in (steps[-1] if steps else {}).items() if k in ("step", "loss", "rewards/margins")}
    # the rest of the stage's seconds: model load, tokenizing, reference log-probs, saving
    runtime = next((r["train_runtime"] for r in logs if "train_runtime" in r), None)
    return {"model": str(path), "rows": len(rows), "trained": True, "final_log": last,
            "overheads": {"train_loop_s": runtime}}


def _launch(cfg: dict, d: Path, method: str, model: str, lora: bool, template: str, trl: dict, peft: dict,
            merge_lora: bool) -> str:
    """Training in a child process under `launcher` (e.g. `accelerate launch --config_file ...`), so
    many GPUs train while the loop itself (sampling, grading, pairs) stays one process."""
    args_file = d / "train_args.yaml"
    atomic_write_text(args_file, yaml.safe_dump({"trl": trl, "peft": peft, "merge_lora": merge_lora},
                                                sort_keys=False))
    cmd = shlex.split(cfg["launcher"]) + ["-m", "mathpo.cli", "train", "--config", str(args_file),
                                          "--method", method, "--model", model, "--data", str(d / "train_rows.jsonl"),
                                          "--out", str(d), "--template", template, "--resume"]
    cmd += ["--lora"] if lora else []
    cmd += ["--cache-dir", str(cfg["cache_dir"])] if cfg["cache_dir"] else []
    print("  " + " ".join(cmd))
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"training failed: {' '.join(cmd)}")
    return str(d / "model")


def pairs_stage(kind: str, graded: list[dict], tokenizer, template: str, opts: dict, d: Path,
                order: dict | None) -> dict:
    from .pairs import dpo, rft

    builder = {"dpo": dpo.build, "rft": rft.build}[kind]
    rows, stats = builder(graded, tokenizer, template, **opts)
    rows = apply_curriculum(rows, order)
    write_jsonl(d / f"{kind}.jsonl", rows)
    return {"rows": len(rows), "pairs": stats}


def step_pairs_stage(cfg: dict, held: BackendCache, model: str, graded: list[dict], d: Path,
                     order: dict | None) -> dict:
    from .loop_config import step_pair_options
    from .pairs import steps

    st = cfg["step"]
    options = step_pair_options(cfg)  # step.pairs over the run's seed and calculator; judge set-up
    loaded, backend, cost = held.get(model, st["template"])
    # finished groups of questions land in step.parts.jsonl first, so a killed stage resumes mid-way
    rows, stats = options.build(graded, steps.parts_path(d / "step.jsonl"), backend, loaded.tokenizer,
                                st["template"])
    rows = apply_curriculum(rows, order)
    write_jsonl(d / "step.jsonl", rows)
    steps.parts_path(d / "step.jsonl").unlink(missing_ok=True)
    return {"rows": len(rows), "pairs": stats, "overheads": cost}


# ---- recipes ----------------------------------------------------------------------------------

def _questions(cfg: dict, train: list[dict], k: int) -> list[dict]:
    """This iteration's training questions: all, or with `sample.questions` a window of that many
    from `sample.start`, moving on each iteration. Gold solutions are dropped except where
    `use_solutions` keeps them (true: all; labelled: the warm-up set's); kept ones join the
    positives of pairs and RFT sets, as in DPO-ST."""
    keep = cfg["use_solutions"]
    labelled = {r["id"] for r in _labelled(cfg, train)} if keep == "labelled" else set()
    q, first = cfg["sample"]["questions"], cfg["sample"]["start"]
    if q and q < len(train):
        start = (first + (k - 1) * q) % len(train)
        train = (train + train)[start:start + q]
    return [r if keep is True or r["id"] in labelled else {key: v for key, v in r.items() if key != "solution"}
            for r in train]


def _labelled(cfg: dict, train: list[dict]) -> list[dict]:
    """The warm-up SFT's labelled records: the first `warmup_sft.limit` with a solution."""
    return [r for r in train if r.get("solution")][: cfg["warmup_sft"]["limit"] or None]


def _iter(k: int) -> str:
    """Iteration k's folder (in a run with arms, `where` maps k to the arm's own; mathpo.loop_arms)."""
    return f"iter_{k}"


def _pooled(run: Run, k: int, stage: str, where=_iter) -> list[dict]:
    rows = []
    for j in range(1, k + 1):
        path = run.root / where(j) / stage / "graded.jsonl"
        if path.is_file():
            rows += read_jsonl(path)
    return rows


def dpo_st(run: Run, k: int, current: str, base: str, warm: str, questions: list[dict], tokenizer,
           where=_iter, final: bool = False) -> str:
    cfg, it = run.cfg, where(k)
    run.stage(f"{it}/sample", lambda d: sample_stage(cfg, run.held, current, questions, cfg["sample"], cfg["template"],
                                                     cfg["seed"] + k, d))
    graded = read_jsonl(run.root / it / "sample" / "graded.jsonl")
    pooled = _pooled(run, k, "sample", where) if cfg["dpo"]["pool"] else graded
    order = curriculum_order(cfg, graded, pooled)
    run.stage(f"{it}/pairs", lambda d: pairs_stage("dpo", pooled, tokenizer, cfg["template"],
                                                   {"k": cfg["dpo"]["k"], "threshold": cfg["dpo"]["threshold"]},
                                                   d, order))
    pairs = read_jsonl(run.root / it / "pairs" / "dpo.jsonl")
    dpo_model = run.stage(f"{it}/dpo", lambda d: train_stage(cfg, run.held, "dpo", current, pairs, cfg["dpo"], d,
                                                             extra=curriculum_train(order)))["model"]
    if "dpo" in cfg["eval"]["after"] or (final and not cfg["sft"]["enabled"]):
        run.stage(f"{it}/eval_dpo", lambda d: eval_stage(cfg, run.held, dpo_model, d, run.root))
    if not cfg["sft"]["enabled"]:
        return dpo_model
    run.stage(f"{it}/sample_dpo", lambda d: sample_stage(cfg, run.held, dpo_model, questions, cfg["rft"],
                                                         cfg["template"], cfg["seed"] + 1000 + k, d))
    pool = cfg["rft"]["pool"]
    if pool == "all":  # the current model's samples too: more questions with a correct solution
        pooled = _pooled(run, k, "sample", where) + _pooled(run, k, "sample_dpo", where)
    elif pool:
        pooled = _pooled(run, k, "sample_dpo", where)
    else:
        pooled = read_jsonl(run.root / it / "sample_dpo" / "graded.jsonl")
    from .loop_st import rft_sft

    start = {"base": base, "warmup": warm, "continue": dpo_model}[cfg["sft"]["restart"]]
    return rft_sft(run, it, pooled, tokenizer, order, start, ("rft", "sft", "sft"), final)


def step_dpo(run: Run, k: int, current: str, questions: list[dict], where=_iter, final: bool = False) -> str:
    cfg, it, st = run.cfg, where(k), run.cfg["step"]
    questions = questions[: st["questions"] or None]
    run.stage(f"{it}/step_sample", lambda d: sample_stage(cfg, run.held, current, questions, st, st["template"],
                                                          cfg["seed"] + 2000 + k, d))
    graded = read_jsonl(run.root / it / "step_sample" / "graded.jsonl")
    order = curriculum_order(cfg, graded)
    run.stage(f"{it}/step_pairs", lambda d: step_pairs_stage(cfg, run.held, current, graded, d, order))
    rows = read_jsonl(run.root / it / "step_pairs" / "step.jsonl")
    model = run.stage(f"{it}/step_dpo", lambda d: train_stage(cfg, run.held, "dpo", current, rows, st, d,
                                                              template=st["template"],
                                                              extra=curriculum_train(order)))["model"]
    if "step_dpo" in cfg["eval"]["after"] or final:
        run.stage(f"{it}/eval_step_dpo", lambda d: eval_stage(cfg, run.held, model, d, run.root))
    return model


def apply_recipe(run: Run, recipe: str, k: int, current: str, base: str, warm: str, questions: list[dict],
                 tokenizer, where=_iter, final: bool = False) -> str:
    """One recipe's stages in iteration k from the model `current`; returns the model it made.
    `final`: evaluate that model even where eval.after leaves it out (an arm's last model)."""
    if recipe == "dpo-st":
        return dpo_st(run, k, current, base, warm, questions, tokenizer, where, final)
    if recipe == "st":
        from .loop_st import st

        return st(run, k, current, base, warm, questions, tokenizer, where, final)
    return step_dpo(run, k, current, questions, where, final)


def run_loop(cfg) -> Path:
    """Run (or resume) the whole loop from a checked config (`loop_config.load` or `load_config`)."""
    cfg = cfg if isinstance(cfg, dict) else cfg.as_dict()
    from .training.launcher import check_launcher  # imports torch, so not at config load

    check_launcher(cfg["launcher"])  # a DeepSpeed launcher without deepspeed: one line, before any stage
    run = Run(cfg)
    run.root.mkdir(parents=True, exist_ok=True)
    runlock.hold(run.root, "loop")  # one writer per run folder: a second loop here exits 2 naming this pid
    write_json(run.root / "config.json", cfg)
    t0 = time.time()
    try:
        return _run(run, cfg, t0)
    finally:
        run.held.release()


def _convert(cfg: dict) -> dict:
    """Resolve the base model (an embedded one is converted to a HF folder once, into the cache)."""
    t0 = time.perf_counter()
    models.resolve(cfg["model"], cfg["cache_dir"])
    return {"overheads": {"convert_s": round(time.perf_counter() - t0, 2)}}


def _run(run: Run, cfg: dict, t0: float) -> Path:
    run.stage("data", lambda d: {**make_data(cfg, d), **_convert(cfg)})
    train = read_jsonl(run.root / "data" / "train.jsonl")
    base = models.resolve(cfg["model"], cfg["cache_dir"])  # converted by the data stage
    tokenizer = models.load_tokenizer(base)
    current = base
    if "base" in cfg["eval"]["after"]:
        run.stage("iter_0/eval_base", lambda d: eval_stage(cfg, run.held, base, d, run.root))
    w = cfg["warmup_sft"]
    if w["enabled"]:
        labelled = _labelled(cfg, train)
        if not labelled:
            raise UserError("warmup_sft needs training records with solutions")
        rows = [{"question": r["question"], "solution": r["solution"]} for r in labelled]
        current = run.stage("iter_0/warmup_sft", lambda d: train_stage(cfg, run.held, "sft", base, rows, w, d))["model"]
        if "warmup_sft" in cfg["eval"]["after"]:
            run.stage("iter_0/eval_warmup_sft", lambda d: eval_stage(cfg, run.held, current, d, run.root))
    warm = current
    if cfg["arms"]:  # several recipe lists from the same warm-up model, shared stages run once
        from .loop_arms import run_arms

        current = ", ".join(f"{arm}: {m}" for arm, m in run_arms(run, base, warm, train, tokenizer).items())
    else:
        for k in range(1, cfg["iterations"] + 1):
            for recipe in cfg["recipe"]:
                current = apply_recipe(run, recipe, k, current, base, warm, _questions(cfg, train, k), tokenizer)
    from .report import write_report

    table = write_report(run.root)
    print(table)
    print(f"final model: {current}\nreport: {run.root / 'report.md'} ({time.time() - t0:.0f} s this run)")
    return run.root
