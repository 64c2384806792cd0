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


def unknown_key(key: str, valid, what: str, of: str = "") -> UserError:
    """One line naming the key and the nearest valid names (difflib matches the key's last part)."""
    import difflib

    near = difflib.get_close_matches(key.rpartition(".")[2], sorted(valid), n=3)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    return UserError(f"unknown {what} '{key}'{of}{hint}")


def _type_ok(value: Any, hint) -> bool:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)


def _type_name(hint) -> str:
    import typing

    args = typing.get_args(hint) or (hint,)
    return " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)


def build_dataclass(cls, raw: Any, where: str = "", what: str = "option"):
    """An instance of dataclass `cls` from a mapping (a YAML section): unknown keys (with the nearest
    name) and values of the wrong type are one-line errors naming `where + key`; nested dataclass
    fields are built from nested mappings; an empty YAML section (None) reads as {} or []."""
    import dataclasses
    import typing

    if not isinstance(raw, dict):
        raise UserError(f"{what} '{where.rstrip('.')}' must be a section")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        if key not in names:
            raise unknown_key(where + key, names, what)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = build_dataclass(hint, value, f"{where}{key}.", what)
            continue
        if value is None and hint in (dict, list):
            value = hint()
        if isinstance(value, str) and _type_ok(1.0, hint) and not _type_ok(value, hint):
            try:  # YAML 1.1 reads `1e-4` (no dot) as a string
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, hint):
            raise UserError(f"{what} '{where}{key}' must be {_type_name(hint)}, got {value!r}")
        values[key] = value
    return cls(**values)
