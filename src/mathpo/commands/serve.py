"""`mathpo serve`: the web demo (Gradio page + OpenAI-compatible API) for one or two models."""

from __future__ import annotations

import ipaddress
import socket

from .. import models, prompts
from ..errors import UserError, require
from . import common


def register(sub) -> None:
    parser, opts = common.new_command(
        sub, "serve", "web demo: ask a model a math question and watch it reason (+ /v1/chat/completions)", run)
    common.model_options(opts)
    opts.add("--compare", default=None, help="a second model answering beside the first (e.g. before/after DPO)")
    opts.add("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 exposes the demo to the network")
    opts.add("--port", type=int, default=7860, help="port of the page and the API")
    opts.add("--template", default=prompts.DEFAULT,
             help=f"prompt template of the page ({', '.join(prompts.TEMPLATES)})")
    opts.add("--calculator", action="store_true", default=False,
             help="force the results of <<expr=...>> annotations (safe arithmetic, never eval)")
    opts.add("--max-new-tokens", type=int, default=512, help="tokens per solution at most (page and API)")
    opts.add("--max-k", type=int, default=8, help="most solutions sampled per question (page k, API n)")
    opts.add("--max-question-chars", type=int, default=2000, help="longest question the page accepts")
    opts.add("--max-prompt-chars", type=int, default=16000, help="longest API conversation, in characters")
    opts.add("--queue", type=int, default=8, help="requests that may wait per model; more are told 'busy' (429)")
    opts.add("--examples", default="gsm8k", help="dataset whose first questions are the page's examples")
    opts.add("--examples-split", default="test", help="split of --examples")
    opts.add("--data-dir", default=None, help="folder with the preset files (else $MATHPO_DATA or ../shared/data)")
    opts.add("--log-dir", default=None, help="append every request to DIR/requests.jsonl (default: write nothing)")


def _check_port(host: str, port: int) -> None:
    """Fail before loading models when the address cannot be bound."""
    if not 0 < port < 65536:
        raise UserError(f"--port must be in 1..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args) -> int:
    cfg = args.options.resolve(args)
    for key in ("max_new_tokens", "max_k", "max_question_chars", "max_prompt_chars"):
        if cfg[key] < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {cfg[key]}")
    if cfg["queue"] < 0:
        raise UserError(f"--queue must be >= 0, got {cfg['queue']}")
    prompts.get(cfg["template"])
    for module in ("gradio", "uvicorn"):  # before a model loads
        require(module, "serve", "mathpo serve")
    _check_port(cfg["host"], cfg["port"])
    names = [cfg["model"]] + ([cfg["compare"]] if cfg["compare"] else [])
    for name in names:
        if name not in models.EMBEDDED:
            models.resolve(name, cfg["cache_dir"])

    import uvicorn

    from ..serve import Limits, ServedModel, build_app, example_questions

    engines = []
    for i, name in enumerate(names):
        loaded = models.load(name, cfg["dtype"], cfg["device"], cfg["cache_dir"])
        shown = name if name not in [e.name for e in engines] else f"{name} ({i + 1})"
        engines.append(ServedModel(shown, loaded.model, loaded.tokenizer, cfg["template"], cfg["queue"],
                              calculator=cfg["calculator"]))
    limits = Limits(cfg["max_new_tokens"], cfg["max_k"], cfg["max_question_chars"], cfg["max_prompt_chars"])
    examples = example_questions(cfg["examples"], cfg["examples_split"], cfg["data_dir"])
    app = build_app(engines, limits, examples, cfg["log_dir"], cfg["queue"])
    url = f"http://{'[' + cfg['host'] + ']' if ':' in cfg['host'] else cfg['host']}:{cfg['port']}"
    if not _is_loopback(cfg["host"]):
        print(f"warning: listening on {cfg['host']}: anyone who can reach this machine can use the models")
    print(f"page: {url}/   API: {url}/v1/chat/completions   models: {', '.join(e.name for e in engines)}", flush=True)
    print(f"request log: {cfg['log_dir']}/requests.jsonl" if cfg["log_dir"] else "request log: off (--log-dir)")
    uvicorn.run(app, host=cfg["host"], port=cfg["port"], log_level="warning", timeout_graceful_shutdown=3)
    return 0
