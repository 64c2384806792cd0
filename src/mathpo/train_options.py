"""Names of TRL's and PEFT's config fields, and the check of a training option against them
(`mathpo train` key=value settings, and every `*.overrides` / `*.peft` key of a `mathpo loop` config).

The loop checks its whole config before any work starts, and that must be quick (a typo should
fail in about a second, not after the 5-15 s that importing torch + TRL takes on a busy CPU). So the
field names are read from the installed TRL / PEFT / transformers source files with `ast`, without
importing them: a dataclass's fields are its annotated class attributes plus its dataclass bases'.
Where the source cannot be read that way (another layout), the real classes are imported instead;
tests/test_loop_config.py checks that both give the same names for the installed versions.
It sits outside `mathpo.training` because importing that package imports transformers.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

from .config import unknown_key

# method -> (module, class) of its TRL config; LoRA settings -> PEFT's LoraConfig
TRL_CONFIGS = {"sft": ("trl.trainer.sft_config", "SFTConfig"), "dpo": ("trl.trainer.dpo_config", "DPOConfig")}
LORA_CONFIG = ("peft.tuners.lora.config", "LoraConfig")
# transformers 5 renamed gradient_checkpointing*; the old name would be ignored once the new one is set
RENAMED = ("gradient_checkpointing", "activation_checkpointing")


def _module_file(module: str) -> Path | None:
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _find_class(module: str, name: str) -> tuple[str, ast.ClassDef] | None:
    """The class `name` as `module` exposes it: defined there, imported there, or (for a package
    with lazy imports such as transformers) defined in one of the package's top-level files."""
    path = _module_file(module)
    if path is None:
        return None
    tree = _parse(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):  # also imports under `if TYPE_CHECKING:` (lazy packages)
        if isinstance(node, ast.ImportFrom) and any(a.name == name and a.asname in (None, name) for a in node.names):
            source = node.module or ""
            if node.level:
                source = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [source]).strip(".")
            if source != module:
                return _find_class(source, name)
    if path.name == "__init__.py":
        for sibling in sorted(path.parent.glob("*.py")):
            if re.search(rf"^class {name}\b", sibling.read_text(encoding="utf-8"), re.M):
                return _find_class(f"{package}.{sibling.stem}", name)
    return None


def _is_dataclass(node: ast.ClassDef) -> bool:
    for d in node.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if (isinstance(target, ast.Name) and target.id == "dataclass") or \
                (isinstance(target, ast.Attribute) and target.attr == "dataclass"):
            return True
    return False


def _init_false(value) -> bool:
    return isinstance(value, ast.Call) and any(k.arg == "init" and isinstance(k.value, ast.Constant)
                                               and k.value.value is False for k in value.keywords)


def _ast_fields(module: str, name: str) -> set[str] | None:
    found = _find_class(module, name)
    if found is None:
        return None
    where, node = found
    if not _is_dataclass(node):
        return set()  # a plain base class (a mixin) adds no dataclass fields
    fields: set[str] = set()
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id not in ("object",):
            inherited = _ast_fields(where, base.id)
            if inherited is None:
                return None
            fields |= inherited
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            if "ClassVar" in ast.unparse(stmt.annotation) or _init_false(stmt.value):
                continue
            fields.add(stmt.target.id)
    return fields


def _imported_fields(module: str, name: str) -> set[str]:
    import dataclasses
    import importlib

    cls = getattr(importlib.import_module(module), name)
    return {f.name for f in dataclasses.fields(cls) if f.init}


@cache
def field_names(module: str, name: str) -> frozenset[str]:
    """Init fields of the dataclass `module.name`, read from source when possible (fast)."""
    try:
        fields = _ast_fields(module, name)
    except (OSError, SyntaxError, ValueError):
        fields = None
    return frozenset(fields if fields else _imported_fields(module, name))


def trl_fields(method: str) -> frozenset[str]:
    return field_names(*TRL_CONFIGS[method])


def trl_key(method: str, key: str, where: str = "") -> str:
    """`key` as a field of the method's TRL config (the renamed gradient_checkpointing mapped), or
    a UserError naming `where + key` and the nearest field."""
    fields = trl_fields(method)
    if key.startswith(RENAMED[0]) and RENAMED[1] in fields:
        key = key.replace(*RENAMED)
    if key not in fields:
        raise unknown_key(where + key, fields, "training option",
                      f" for TRL's {TRL_CONFIGS[method][1]}")
    return key


def check_trl(method: str, options: dict, where: str = "") -> None:
    for key in options:
        trl_key(method, key, where)


def check_peft(options: dict, where: str = "") -> None:
    fields = field_names(*LORA_CONFIG)
    for key in options:
        if key not in fields:
            raise unknown_key(where + key, fields, "LoRA option", " for PEFT's LoraConfig")
