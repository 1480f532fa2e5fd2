# Two entry points, each doing its own set-up: `make demo` and `make test`.
# The virtual environment is created on first use and refreshed when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch is the default; on a GPU machine install the CUDA build into .venv
# first (see README.md) and `make` keeps it, since a torch that imports is never replaced.
TORCH ?= torch==2.13.0

.PHONY: demo test lab clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# The demo needs the library only; the tests add nbval, ipykernel, pytest and pytest-xdist, and `make lab` adds
# jupyterlab on top, each in a single install of the library (a larger install also serves the smaller).
INSTALL_TORCH = $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(INSTALL_TORCH)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/activate pyproject.toml
	$(INSTALL_TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(VENV)/.installed $@

$(VENV)/.installed-dev: $(BIN)/activate pyproject.toml
	$(INSTALL_TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $(VENV)/.installed-test $@

demo: $(VENV)/.installed
	$(BIN)/python -m lea_tiny demo

# One worker per core, each test file (each notebook) on one worker, one thread each (conftest.py):
# these small networks gain little from a second thread, so two workers finish far sooner than one.
test: $(VENV)/.installed-test
	MPLBACKEND=Agg $(BIN)/python -m pytest -n auto --dist loadfile --durations=15

lab: $(VENV)/.installed-dev
	$(BIN)/jupyter lab tutorials

clean:
	rm -rf $(VENV) lea_tiny_out *.egg-info
