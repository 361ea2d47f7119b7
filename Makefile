# The README's two set-up commands: `make quickstart` and `make test`.
# torch is pinned here (a CPU build that installs from local disk on our machines);
# pyproject.toml keeps a range so other machines can bring their own CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN ?= torch==2.13.0

.PHONY: install install-test quickstart test benchmark

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The package and its core dependencies: all that training, eval, probes and compare need.
install: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_PIN)" -e .

# Plus the test extra: pytest and the optional integrations the tests exercise (TensorBoard, transformers, lm-eval).
install-test: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_PIN)" -e ".[test]"

quickstart: install
	$(BIN)/diffformer train recipes/quickstart.yaml --resume

test: install-test
	$(BIN)/python -m pytest -q

benchmark: install
	$(BIN)/python benchmarks/attention.py
