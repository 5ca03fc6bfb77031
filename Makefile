# The two commands of the README:
#   make demo   install everything, then run the whole job end to end on embedded defaults
#   make test   install everything (incl. DCMTK, dicom3tools, Chromium when root), then run the tests
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.eusdx-installed
PYTEST_ARGS ?=

.PHONY: install system-deps demo test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh
	bash scripts/install-ohif.sh

demo: install system-deps
	$(VENV)/bin/eusdx demo

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything except the slow end-to-end runs (CI runs those too, through `make test`).
test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache
