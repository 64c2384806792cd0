"""The optional request log of `mathpo serve --log-dir DIR`: one JSONL row per answered request.

Without `--log-dir` nothing is written anywhere. Rows: `time, source (page|api), model`, then
`question` and `completions` (page) or `messages` and `completions` (API); an API request whose
client disconnected has `messages`, `client: "gone"` and `steps` (tokens generated before it stopped).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..records import JsonlAppender


class RequestLog:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / "requests.jsonl"
        self._out = JsonlAppender(self.path)
        self._lock = threading.Lock()  # page and API threads append to the same file

    def write(self, source: str, model: str, **fields) -> None:
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "source": source, "model": model, **fields}
        with self._lock:
            self._out.append([row])
