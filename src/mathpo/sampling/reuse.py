"""One loaded model and its sampling backend, kept while consecutive stages use the same model
(`mathpo loop`: the eval after a training stage and the sampling from that model share one load).

    held = BackendCache(BackendSettings(batch_size=32))
    loaded, backend, cost = held.get("runs/demo/iter_1/dpo/model", "gsm8k")
    # cost == {"load_s": 2.1, "backend_s": 0.4, "reused": False}; the next get() of the same model
    # returns the same objects with {"load_s": 0.0, "backend_s": 0.0, "reused": True}
    held.release()  # before training, or when the run ends: the model and its KV memory are freed

Keyed by the model path; a different template only rebuilds the backend when it wants other special
tokens. A backend object with a `close()` (an engine holding processes or device memory, or a Ray
backend's workers) is closed on release. With `ray` set, the backend's workers each load the model
(`distributed_ray.start`); this process keeps only the tokenizer.
"""

from __future__ import annotations

import gc
import time

from .. import models, prompts
from . import BackendSettings, loads_weights, make_backend


class BackendCache:
    def __init__(self, settings: BackendSettings | None = None, dtype: str = "auto", device: str = "auto",
                 cache_dir=None, ray=None):
        self.settings = settings or BackendSettings()
        self.load_options = {"dtype": dtype, "device": device, "cache": cache_dir}
        self.ray = ray  # None, or the loop's `ray:` setting (an address or a section)
        self.model: str | None = None
        self.loaded = None
        self.backend = None
        self.special: bool | None = None

    def get(self, model: str, template: str):
        """(loaded, backend, cost) for `model` sampled with `template`; cost says what this call paid."""
        cost = {"load_s": 0.0, "backend_s": 0.0, "reused": True}
        special = prompts.add_special_tokens(template)
        if self.ray and (model != self.model or special != self.special):
            from . import distributed_ray

            self.release()
            t0 = time.perf_counter()
            self.loaded, self.backend = distributed_ray.start(
                self.ray, build_local, (model, template, self.load_options, self.settings), model,
                self.settings.name, self.load_options["cache"])
            self.model, self.special = model, special
            cost.update(backend_s=round(time.perf_counter() - t0, 2), reused=False)
            return self.loaded, self.backend, cost
        if model != self.model:
            self.release()
            t0 = time.perf_counter()
            self.loaded = models.load(model, quiet=True, weights=loads_weights(self.settings.name),
                                      **self.load_options)
            self.model = model
            cost.update(load_s=round(time.perf_counter() - t0, 2), reused=False)
        if self.backend is None or special != self.special:
            self._close_backend()
            t0 = time.perf_counter()
            self.backend = make_backend(self.loaded, self.settings, template)
            self.special = special
            cost.update(backend_s=round(time.perf_counter() - t0, 2), reused=False)
        return self.loaded, self.backend, cost

    def _close_backend(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
        self.backend = None

    def release(self) -> None:
        """Free the model and its backend (a training stage needs the memory; its model is a new one)."""
        if self.loaded is None and self.backend is None:
            return
        self._close_backend()
        self.loaded = self.model = self.special = None
        gc.collect()


def build_local(model: str, template: str, load_options: dict, settings: BackendSettings):
    """(loaded, backend) in this process: what each Ray worker runs for the loop."""
    loaded = models.load(model, quiet=True, weights=loads_weights(settings.name), **load_options)
    return loaded, make_backend(loaded, settings, template)
