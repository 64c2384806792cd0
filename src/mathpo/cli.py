"""The `mathpo` command line: one subcommand per stage, following the data flow.

    mathpo data synth | sample | grade | pairs | train | eval | loop | serve

Each subcommand lives in `mathpo.commands.<name>` and only parses options and calls one stage
function. User mistakes (UserError) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from . import __version__
from .errors import UserError

# Order = the data flow; a module is listed once it exists.
COMMANDS = ["data", "sample", "grade", "pairs", "train", "eval", "loop", "serve"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mathpo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mathpo {__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mathpo.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mathpo.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .progress import setup_logging

    setup_logging(args.log_level)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"mathpo {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk is the user's to fix too (records' own writes say which file)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"mathpo {args.command}: error: disk full{where}; free space and re-run the same command "
              "(it resumes)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mathpo {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def entry() -> None:
    """The `mathpo` executable (and `python -m mathpo.cli`): a command that samples or trains first
    re-executes itself under TCMalloc where the system has it (`mathpo.allocator`); then `main`."""
    argv = sys.argv[1:]
    from . import allocator

    if next((a for a in argv if a in COMMANDS), None) in allocator.COMMANDS:
        allocator.reexec(argv)
    sys.exit(main(argv))


if __name__ == "__main__":
    entry()
