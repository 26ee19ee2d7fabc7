# Every target builds on `make install`, which creates .venv/ with the package and its pinned dependencies.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install demo test test-fast bench clean

install: $(BIN)/train

$(BIN)/train: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[test]'
	# gluoncv declares the GUI build of opencv; the headless one installed above serves it.
	$(PIP) --no-deps gluoncv
	touch $(BIN)/train

demo: install
	$(BIN)/semseg demo --workdir demo

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow and not container"

bench: install
	$(BIN)/python bench/train_speed.py

clean:
	rm -rf $(VENV) demo build *.egg-info src/*.egg-info
