# userprofile-service: `make run` serves, `make test` tests. Both start from a
# fresh clone: they make the virtual environment and install what they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check --quiet

.PHONY: run test lint bench loadtest soak clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

# Serve on SERVICE_PORT (8080). On the embedded store, seed it first when empty.
run: $(VENV)/.runtime
ifndef COUCHBASE_HOST
	$(PY) loaddata.py --count 10000 --if-empty --show-token
endif
	exec $(PY) userprofile_service.py

test: $(VENV)/.dev
	bash tools/install_caves.sh
	bash tools/install_jmeter.sh
	$(PY) -m ruff check .
	$(PY) -m pytest

DURATION ?= 30
THREADS  ?= 8

# Start the service on the embedded store, load it with the JMeter plan, and report.
loadtest: $(VENV)/.runtime
	bash tools/install_jmeter.sh >/dev/null
	$(PY) jmeter/loadtest.py --duration $(DURATION) --threads $(THREADS)

# The three-way benchmark (bench/run.py --help): our service, FastAPI and Express,
# each on one core, driven by wrk on the other; writes bench/results/.
# BENCH_ARGS=--quick for a smoke run, e.g. BENCH_ARGS="--only ours --conns 32".
$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(PIP) install -r bench/requirements.txt
	touch $@

bench/express/node_modules/.package-lock.json: bench/express/package-lock.json
	cd bench/express && npm ci --no-audit --no-fund

bench: $(VENV)/.bench bench/express/node_modules/.package-lock.json
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) bench/run.py $(BENCH_ARGS)

# A minute of load on the Couchbase emulator with the store frozen for 5 s in the middle.
soak: $(VENV)/.dev
	bash tools/install_caves.sh
	$(PY) tools/soak.py

lint: $(VENV)/.dev
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .tools data jmeter/results .pytest_cache .ruff_cache
