# Two commands: `make demo` runs the pipeline end to end on the sample data through the
# `tfx` CLI; `make test` runs the test suite. Both create .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(INSTALLED)

# tfx 1.16 declares Python < 3.11 although its dependencies all have 3.11 wheels; the
# constraints pin the whole TFX 1.16 stack (without them pip backtracks for an hour).
$(INSTALLED): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --ignore-requires-python -c constraints.txt -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(BIN)/python -m pipeline.demo

test: $(INSTALLED)
	$(BIN)/python -m pytest tests

clean:
	rm -rf output
