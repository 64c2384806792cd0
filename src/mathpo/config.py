"""Configuration: YAML experiment files plus `key=value` overrides from the command line.

Precedence, lowest first: built-in defaults < YAML file (`--config`) < explicit flags < `key=value`.
Every subcommand uses `Options` to declare its flags once; `mathpo <command> --help` shows them
with their defaults. Dotted keys (`train.beta=0.2`) reach into nested sections.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, reading `1e-4` / `5e-7` as floats (as YAML 1.2 and JSON do): YAML 1.1 wants
    `1.0e-4` and would hand TRL the string '5e-7' as a learning rate."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+.0123456789"))


def parse_value(text: str) -> Any:
    """`3` -> 3, `0.5` -> 0.5, `true` -> True, `[1,2]` -> [1, 2], anything else stays a string."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def set_dotted(cfg: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = cfg
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        elif not isinstance(nxt, dict):
            raise UserError(f"override {key}: '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(cfg: dict, overrides: list[str], known: set[str] | None = None) -> dict:
    """Apply `key=value` strings to cfg in place. With `known`, top-level keys must be in it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UserError(f"bad override '{item}': expected key=value")
        if known is not None and key.split(".")[0] not in known:
            raise UserError(f"unknown option '{key}' (see --help)")
        set_dotted(cfg, key, parse_value(value))
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such config file: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


class Options:
    """Declares a subcommand's options with real defaults kept apart from argparse.

    argparse sees `default=None` for every option, so after parsing we can tell flags the user
    typed from ones left alone, and let a YAML file sit between the defaults and the flags.
    """

    def __init__(self, parser: argparse.ArgumentParser, config_file: bool = True):
        self.parser = parser
        self.defaults: dict[str, Any] = {}
        if config_file:
            parser.add_argument("--config", help="YAML file with option values (keys as below, '_' for '-')")
        parser.add_argument(
            "overrides", nargs="*", metavar="key=value",
            help="override any option or nested setting, e.g. temperature=0.7 train.beta=0.1",
        )

    def add(self, *flags: str, default: Any = None, help: str = "", **kw) -> None:
        action = self.parser.add_argument(*flags, default=None, help=f"{help} (default: {default})", **kw)
        self.defaults[action.dest] = default

    def resolve(self, args: argparse.Namespace) -> dict:
        cfg: dict[str, Any] = dict(self.defaults)
        if getattr(args, "config", None):
            data = load_yaml(args.config)
            for key, value in data.items():
                k = key.replace("-", "_")
                if k not in self.defaults:
                    raise UserError(f"{args.config}: unknown option '{key}' (see --help)")
                cfg[k] = value
        for dest in self.defaults:
            value = getattr(args, dest, None)
            if value is not None:
                cfg[dest] = value
        apply_overrides(cfg, list(getattr(args, "overrides", []) or []), known=set(self.defaults))
        return cfg
