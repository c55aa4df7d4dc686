# The two commands of the README: `make demo` and `make test`. Each sets up what it needs:
# `make demo` (and `make setup`) what the demo runs, `make test` the test tools as well.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup setup-test lint bench clean

# bakup in a virtualenv, and the system packages the demo runs.
setup: $(VENV)/.installed-demo

# That, with the test extra (pytest, ruff, mypy, emulators) and the test-only system tools.
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-demo: pyproject.toml setup.py scripts/install-system-packages
	scripts/install-system-packages demo
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# Not built on top of the demo's stamp: one pip run installs bakup with its test extra (and
# builds the C extension once); the demo's set-up is then complete too.
$(VENV)/.installed-test: pyproject.toml setup.py scripts/install-system-packages scripts/install-test-tools
	scripts/install-system-packages test
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	scripts/install-test-tools
	touch $@ $(VENV)/.installed-demo

demo: setup
	$(BIN)/python scripts/demo.py

# Three workers on two cores: most tests wait on servers and child processes, not the CPU.
# loadfile keeps each module's tests (and its module-scoped databases) in one worker.
test: setup-test lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n 3 --dist loadfile

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/backup_speed

clean:
	rm -rf $(VENV) .demo
