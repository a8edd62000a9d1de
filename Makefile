# Two entry points: `make demo` and `make test`. Both install everything into .venv/ first.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.speechlm-installed
SYSTEM := $(VENV)/.system-installed

.PHONY: setup demo test clean-runs

setup: $(SYSTEM) $(STAMP)

$(SYSTEM): scripts/setup_system.sh
	bash scripts/setup_system.sh
	@mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, from the CPU wheel; a bare `torch` would pull a CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,bench]'
	touch $@

demo: setup
	$(PY) recipes/demo.py

test: setup
	$(PY) -m pytest -q tests

clean-runs:
	rm -rf runs
