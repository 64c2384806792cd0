"""The symbolic-check worker process: `python -m mathpo.grading.worker` (started by grading.symbolic).

Reads one JSON line `[pred, gold]` at a time on stdin and answers one line `true`/`false` on stdout,
after a first line `"ready"` once sympy and Math-Verify are imported. It caps its own address space
(MEMORY_LIMIT) so that a sympy blow-up fails here instead of taking the machine; the parent enforces
the wall-clock limit by killing it.
"""

from __future__ import annotations

import json
import logging
import sys

MEMORY_LIMIT = 2 * 1024 ** 3


def verify_pair(pred: str, gold: str) -> bool:
    """Math-Verify's verdict on two answer strings; its signal-based timeouts are off (parent kills us)."""
    from math_verify import parse, verify

    g = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    p = parse("\\boxed{" + pred + "}", parsing_timeout=None)
    return bool(g and p and verify(g, p, timeout_seconds=None))


def serve(stdin=None, stdout=None) -> None:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    import math_verify  # noqa: F401  (import before saying ready, so deadlines count only the check)

    sys.set_int_max_str_digits(100_000)
    stdout.write('"ready"\n')
    stdout.flush()
    for line in stdin:
        try:
            pred, gold = json.loads(line)
            ok = verify_pair(str(pred), str(gold))
        except BaseException:  # MemoryError, RecursionError, sympy internals: all mean "not shown equal"
            ok = False
        stdout.write("true\n" if ok else "false\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
