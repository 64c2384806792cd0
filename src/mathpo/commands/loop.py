"""`mathpo loop CONFIG.yaml [key=value ...]`: run or resume a self-training loop (mathpo.loop).

    mathpo loop configs/demo.yaml                      # the embedded CPU demo
    mathpo loop configs/gsm8k.yaml iterations=2 dpo.overrides.beta=0.2

The settings and their checks are mathpo.loop_config's: the YAML file over its defaults, then
dotted `key=value` overrides, all checked (TRL and step-pair keys too) before anything runs.
Re-running the same command resumes at the first unfinished stage.
"""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("loop", help="self-training loop (DPO-ST, Step-DPO, ST; arms side by side), "
                            "resumable by stage",
                            description=__doc__.splitlines()[0])
    parser.add_argument("config", help="YAML experiment file (configs/demo.yaml, configs/gsm8k.yaml, ...)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any setting with a dotted key, e.g. iterations=2 dpo.overrides.beta=0.2")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..loop_config import load_config

    cfg = load_config(args.config, args.overrides)  # every check happens here, before any import of torch
    from ..loop import run_loop

    run_loop(cfg)
    return 0
