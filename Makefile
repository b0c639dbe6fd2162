# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned to a CPU build; pass e.g.
#   TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
# where the default index would give a CUDA build, or install your own torch for GPUs.
TORCH_VERSION ?= 2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: demo test clean-lake

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/interestlake demo

test: $(STAMP)
	$(BIN)/python -m pytest

clean-lake:
	rm -rf lakehouse
