# userprofile-service: `make run` serves, `make test` tests. Both start from a
# fresh clone: they make the virtual environment and install what they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check --quiet
# CPython 3.13, the image's interpreter, for the suite's second run (make test-3.13).
PYTHON313 ?= python3.13
VENV313   := .venv-3.13

.PHONY: run load test test-3.13 test-integration check lint bench bench-ab loadtest soak clean image fleet openapi settings-table k8s k8s-down k8s-e2e

# The project itself is installed editable (pyproject.toml), so tests, tools and bench
# import its modules from the working tree without touching sys.path.
$(VENV)/.runtime: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-tracing.txt
	$(PIP) install -r requirements-dev.txt
	touch $@

# Serve on SERVICE_PORT (8080). On the embedded store, seed it first when empty.
run: $(VENV)/.runtime
ifndef COUCHBASE_HOST
	$(PY) loaddata.py --count 10000 --if-empty --show-token
endif
	exec $(PY) userprofile_service.py

# The loader, from the project's environment, into the store the settings select (loaddata.py
# --help): LOAD_ARGS="--count 10000", "--overwrite", "--rotate-token --show-token".
LOAD_ARGS ?= --count 10000
load: $(VENV)/.runtime
	$(PY) loaddata.py $(LOAD_ARGS)

# The suite, as CI runs it first: the linters, then the tiers in-process, over real sockets, and
# with outside programs (the CAVES emulator and Couchbase's SQL++ engine, JMeter, the container image,
# a fleet behind haproxy and nginx, dnsmasq, promtool on the alerts and the dashboard) on Python 3.11,
# the oldest the code supports; then the in-process and socket tiers again on 3.13, the image's.
# (tests/README.md: the tiers; `make test-integration` and `make k8s-e2e` run the other two.)
# The 3.13 venv is made first, so a missing python3.13 stops the run at once.
test: $(VENV)/.dev $(VENV313)/.dev
	bash tools/install_caves.sh
	bash tools/install_cbq_engine.sh
	bash tools/install_jmeter.sh
	bash tools/install_podman.sh
	bash tools/install_fleet.sh
	bash tools/install_debs.sh dnsmasq=dnsmasq-base
	bash tools/install_debs.sh promtool=prometheus
	bash tools/lint.sh
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-3.13

# The counterparts a deployment meets, each built or started here as a user would meet it:
# Keycloak issuing access tokens, an OpenTelemetry Collector receiving the spans, kustomize and
# kube-score on the manifests (the `integration` tier, tests/README.md). Their cold installs
# (Go builds, Keycloak's distribution) take minutes, so they have a target of their own, which CI
# runs after `make test`.
test-integration: $(VENV)/.dev
	bash tools/install_caves.sh
	bash tools/install_keycloak.sh >/dev/null
	bash tools/install_otelcol.sh >/dev/null
	bash tools/install_manifest_tools.sh
	$(PY) -m pytest -m integration

# A pyenv shim runs python3.13 only when 3.13 is among pyenv's selected versions; failing
# that, the shim is asked for pyenv's 3.13 by name (PYENV_VERSION changes nothing but pyenv's shims).
$(VENV313)/.dev: requirements.txt requirements-dev.txt requirements-tracing.txt pyproject.toml
	$(PYTHON313) -m venv --clear $(VENV313) 2>/dev/null || PYENV_VERSION=3.13 $(PYTHON313) -m venv --clear $(VENV313) \
		|| { echo "make: no CPython 3.13 as PYTHON313=$(PYTHON313): pyenv install 3.13, or make PYTHON313=/path/to/python3.13" >&2; exit 1; }
	$(VENV313)/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13) and "make: PYTHON313 is Python " + sys.version)'
	$(VENV313)/bin/pip --disable-pip-version-check --quiet install -r requirements-dev.txt
	$(VENV313)/bin/pip --disable-pip-version-check --quiet install --no-deps -e .
	touch $@

test-3.13: $(VENV313)/.dev
	$(VENV313)/bin/python -m pytest -q -m "inprocess or socket"

# The inner loop, under a minute (about 40 s here): the linters and the in-process tier, the tests that need
# no service process and no socket (tests/README.md: the tiers and how to run each).
check: $(VENV)/.dev
	bash tools/lint.sh
	$(PY) -m pytest -q -m inprocess

DURATION ?= 30
THREADS  ?= 8

# Start the service on the embedded store, load it with the JMeter plan, and report.
# LOADTEST_ARGS=--idp: in JWT mode, with an access token from Keycloak (tools/install_keycloak.sh).
loadtest: $(VENV)/.runtime
	bash tools/install_jmeter.sh >/dev/null
	$(PY) jmeter/loadtest.py --duration $(DURATION) --threads $(THREADS) $(LOADTEST_ARGS)

# The three-way benchmarks (bench/run.py --help): our service, FastAPI and Express,
# each on one core, driven by wrk on the other; first on the embedded store, then
# on a CAVES cluster (with a framework-free Node.js server as the SDK's ceiling).
# Writes bench/results/ and bench/README.md's tables from them (make bench-figures). BENCH_ARGS=--quick
# for a smoke run (its numbers go to bench/results/raw/), e.g. BENCH_ARGS="--repeat 3".
$(VENV)/.bench: $(VENV)/.runtime bench/requirements.txt
	$(PIP) install -r bench/requirements.txt
	touch $@

# npm install, not npm ci: couchbase 4.7.1 lists a Windows binary package that was
# never published, and npm ci refuses a lock without it. The lock still fixes every version.
bench/express/node_modules/.package-lock.json: bench/express/package-lock.json
	cd bench/express && npm install --no-audit --no-fund

bench/node_bare/node_modules/.package-lock.json: bench/node_bare/package-lock.json
	cd bench/node_bare && npm install --no-audit --no-fund

bench: $(VENV)/.bench bench/express/node_modules/.package-lock.json bench/node_bare/node_modules/.package-lock.json
	bash tools/install_debs.sh wrk
	bash tools/install_caves.sh
	bash tools/install_cbq_engine.sh
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/run.py --couchbase $(BENCH_ARGS)
	$(PY) bench/figures.py

# bench/README.md's tables, made from the results in bench/results/ (bench/figures.py), as `make bench`
# ends; by hand after a bench/run.py of the whole set. tests/test_docs.py checks the README agrees with them.
.PHONY: bench-figures
bench-figures: $(VENV)/.runtime
	$(PY) bench/figures.py

# The working tree against an earlier commit, in one run (bench/ab.py --help): ours on
# the embedded store at 32 connections, the two alternating. AB_ARGS="--against 6946c67".
bench-ab: $(VENV)/.runtime
	bash tools/install_debs.sh wrk
	$(PY) bench/ab.py $(AB_ARGS)

# A minute of load on the Couchbase emulator with the store frozen for 5 s in the middle.
soak: $(VENV)/.dev
	bash tools/install_caves.sh
	$(PY) tools/soak.py

# A fleet of instances behind haproxy (TCP and HTTP modes) and nginx, loaded by three kinds of
# keep-alive clients and JMeter through a rolling restart, scale-out, scale-in, the idle race and
# a pipelining client (python3 -m tools.fleet --help); prints the summary table k8s/README.md shows.
# FLEET_ARGS="--only rolling idle" for some scenarios. tests/test_fleet.py asserts the figures.
fleet: $(VENV)/.runtime
	bash tools/install_jmeter.sh >/dev/null
	bash tools/install_fleet.sh
	$(PY) -m tools.fleet $(FLEET_ARGS)

# A real one-node Kubernetes (tools/k8s/VERSION) in a private network namespace (tools/k8s/cluster.py; needs root):
# builds what is not cached (tools/install_k8s.sh), loads the image, applies k8s/overlays/$(K8S_STORE)
# and prints the time from nothing to the first pod Ready. `make k8s-down` leaves nothing behind.
K8S_STORE ?= embedded
k8s: $(VENV)/.runtime
	bash tools/install_k8s.sh
	bash tools/install_caves.sh
	bash tools/image.sh
	$(PY) -m tools.k8s.cluster up --store $(K8S_STORE)

k8s-down: $(VENV)/.runtime
	$(PY) -m tools.k8s.cluster down

# The blog's experiment on that cluster, on the embedded store and on CAVES: JMeter through the
# Service's ClusterIP during a rollout, a deleted pod, scale-in and -out and the HPA (tools/k8s/e2e.py);
# tests/test_k8s.py (the k8s tier, not in `make test`) asserts the figures. About 12 minutes.
k8s-e2e: $(VENV)/.dev
	bash tools/install_k8s.sh
	bash tools/install_caves.sh
	bash tools/install_cbq_engine.sh
	bash tools/install_jmeter.sh >/dev/null
	bash tools/image.sh
	$(PY) -m pytest -m k8s tests/test_k8s.py

lint: $(VENV)/.dev
	bash tools/lint.sh

# The generated files, after editing what they come from (tools/generate.py): openapi.json
# from openapi.yaml; docs/configuration.md's table and options.py from settings.py's table.
openapi: $(VENV)/.dev
	$(PY) tools/generate.py openapi

settings-table: $(VENV)/.dev
	$(PY) tools/generate.py settings-table

# The container image from the Dockerfile (tools/image.sh: podman, or docker with a running
# daemon); prints the build time and the size, and says when the base had to be a stand-in.
image:
	bash tools/image.sh

clean:
	rm -rf $(VENV) $(VENV313) .tools data jmeter/results .pytest_cache .ruff_cache .mypy_cache *.egg-info
