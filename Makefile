# Two commands on a fresh machine with only Python: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision must come as a matching pair (a CPU-only torch cannot import PyPI's torchvision).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
OUT ?= outputs

.PHONY: env demo figures test test-gpu lab bench clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install $(TORCH_PINS)
	$(BIN)/pip install -e ".[dev,notebooks]"
	-$(BIN)/pip install "cupy-cuda13x>=13" || echo "cupy not installed: kernels fall back to torch"
	touch $@

# Train the default preset (shapes, generated on first use) and evaluate it, then run the notebooks.
demo: env
	$(BIN)/fcoslab train --config shapes --out runs/shapes --force
	$(BIN)/fcoslab evaluate runs/shapes
	$(BIN)/fcoslab predict runs/shapes data/shapes/val --score 0.5 --one-class --out $(OUT)/predictions
	@if [ -d notebooks ] && ls notebooks/*.ipynb >/dev/null 2>&1; then \
		$(BIN)/python -m fcoslab.apps.notebooks run --out $(OUT)/notebooks --run runs/shapes --only 00 01 02 03 04 05; fi

# The README's figures from the demo's trained run (after make demo); the viewer screenshot needs chromium.
figures: env
	$(BIN)/python -m fcoslab.apps.notebooks figures --executed $(OUT)/notebooks --out docs/figures
	$(BIN)/python -m fcoslab.apps.browser runs/shapes --score 0.5 --out docs/figures/viewer_jupyterlab.jpg

# Two workers of one thread each (pytest-xdist): on 2 cores the suite's many short processes and imports
# overlap; a file's tests stay on one worker, so its module fixtures are built once.
TEST_WORKERS ?= 2
test: env
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-gpu: env
	$(BIN)/python -m pytest -q -m gpu

lab: env
	$(BIN)/jupyter lab notebooks

bench: env
	$(BIN)/python benchmarks/speed.py

clean:
	rm -rf runs outputs data/shapes
