# edgeport: `make run` (train -> export -> parity) and `make test` each set up what they need.
PYTHON ?= python3
VENV ?= .venv
DEVICE_VENV ?= .venv-device
PY := $(VENV)/bin/python
RUN ?= runs/quickstart

.PHONY: run test test-fast lint bench device-venv web demo wheel clean thresholds-table

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $@

# The TensorFlow-free device environment: the legacy tflite-runtime needs numpy<2.
# edgeport itself goes in with --no-deps: its base needs LiteRT, which this venv replaces.
$(DEVICE_VENV)/.installed: mobile_demo/requirements-device-legacy.txt pyproject.toml
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/python -m pip install --quiet -r mobile_demo/requirements-device-legacy.txt
	$(DEVICE_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

device-venv: $(DEVICE_VENV)/.installed

# The phone page's JavaScript runtimes (LiteRT.js, onnxruntime-web), pinned by the lockfile.
WEB := mobile_demo/web
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund --ignore-scripts
	touch $@

web: $(WEB)/node_modules/.package-lock.json

# The phone page for the Quickstart's run: HOST=0.0.0.0 HTTPS=--https for a phone on the Wi-Fi.
HOST ?= 127.0.0.1
HTTPS ?=
demo: $(VENV)/.installed web
	test -f $(RUN)/export/manifest.json || $(MAKE) run
	$(VENV)/bin/edgeport-demo serve $(RUN)/export --host $(HOST) $(HTTPS)

run: $(VENV)/.installed
	$(VENV)/bin/edgeport run --out $(RUN) --force

test: $(VENV)/.installed $(DEVICE_VENV)/.installed web
	$(PY) -m ruff check .
	EDGEPORT_DEVICE_PYTHON=$(abspath $(DEVICE_VENV))/bin/python $(PY) -m pytest --durations=20

# The inner loop: every module's fast tests (no slow, device or browser test), lint first.
test-fast: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow and not device and not browser" -q --durations=10

lint: $(VENV)/.installed
	$(PY) -m ruff check .

bench: $(VENV)/.installed $(DEVICE_VENV)/.installed
	EDGEPORT_DEVICE_PYTHON=$(abspath $(DEVICE_VENV))/bin/python $(PY) benchmarks/run_all.py

# The installable wheel, until edgeport is on PyPI: dist/edgeport-<version>-py3-none-any.whl
# (`pip install dist/edgeport-*.whl` is the device side; add [tensorflow] to train and export).
wheel: $(VENV)/.installed
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) $(DEVICE_VENV) runs dist build .pytest_cache .ruff_cache

# The README's thresholds table, rendered from export/thresholds.py (its one source).
thresholds-table: $(VENV)/.installed
	$(PY) -W ignore -m edgeport.export.thresholds --readme README.md
