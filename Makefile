# Two entry points work on a fresh machine with nothing but Python:
#   make demo   set up .venv and run the quickstart study on built-in data
#   make test   set up .venv with the dev tools and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
VP     := $(VENV)/bin/vpsearch
STAMP  := $(VENV)/.installed

.PHONY: demo test setup bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: a loose torch would pull several GB of CUDA wheels
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VP) study run studies/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
