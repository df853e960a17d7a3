# The README's two commands live here: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_ARGS ?=

.PHONY: venv test test-fast demo lint bench clean

venv: $(STAMP)

$(STAMP): packages/met_harvester/pyproject.toml packages/met_vision/pyproject.toml pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch, torchvision, timm, lightning, torchmetrics: the versions of constraints.txt (the images use it too)
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt -e packages/met_harvester -e packages/met_vision -e '.[dev]'
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: venv
	$(PY) -m pytest -q -m "not slow" -x

demo: venv
	$(PY) -m met_vision.demo $(DEMO_ARGS)

lint: venv
	$(VENV)/bin/ruff check packages tests bench
	$(VENV)/bin/ruff format --check packages tests bench
	$(VENV)/bin/mypy

bench: venv
	$(PY) bench/harvest.py
	$(PY) bench/images.py
	$(PY) bench/csv_import.py
	$(PY) bench/loader.py
	$(PY) bench/train.py

clean:
	rm -rf $(VENV) demo-output
