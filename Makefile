# Two entry points: `make demo` (set up + segment the bundled sample) and `make test` (set up + tests).
# pip runs with --no-cache-dir: the environment is 2.3 GB and a second copy in the cache is not needed.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean-venv

$(STAMP): pyproject.toml requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# demo-output/ belongs to the demo: each run replaces it.
demo: $(STAMP)
	rm -rf demo-output
	$(BIN)/vertebra-traversal demo --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
