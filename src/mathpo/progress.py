"""Progress bars (hidden when stderr is not a terminal) and log setup, shared by all commands."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm


def bar(total: int, desc: str, unit: str = "it"):
    return tqdm(total=total, desc=desc, unit=unit, disable=not sys.stderr.isatty(), dynamic_ncols=True)


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # transformers and datasets are chatty at info level; keep them at warning unless debugging
    if level.lower() != "debug":
        for name in ("transformers", "datasets", "accelerate", "httpx", "urllib3"):
            logging.getLogger(name).setLevel(logging.WARNING)
