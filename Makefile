# The two set-up commands of the README: `make demo` and `make test`. Both work on a fresh machine
# with only Python 3.11: they create .venv, install the package, convert the offline weights, then run.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install weights demo test bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,beam]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m tfharm.data.build --flagfile=configs/build_demo.flags
	$(PY) -m tfharm.data.summary --data_dir=out/demo/tfds --config=256

test: install
	$(PY) -m pytest -q -m "not slow" tests data_builders

clean:
	rm -rf $(VENV) out
