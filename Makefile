# The two set-up commands of the README. Both create .venv (once) and install the pinned,
# tested versions from requirements/constraints.txt (torch 2.13.0, CPU build where available).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test lint install clean

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c requirements/constraints.txt -e ".[test]"
	# test-only reference implementation (APGD cross-check), installed without its dependencies
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps torchattacks==3.5.1
	# test-only reference implementation (AutoAttack parity tests; imports only numpy and torch)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps pyautoattack==0.2.0
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/encshield quickstart

# one worker process per core (pytest-xdist; each worker runs torch on its share of the cores)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

# ruff over the code, tests and benchmarks; mypy (strict, configured in pyproject.toml) over src
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
