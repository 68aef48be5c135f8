#!/usr/bin/env bash
# Static checks of the repository, outside pytest: ruff, mypy, bandit, hadolint,
# kubernetes-validate and openapi-spec-validator. Each prints what it checked;
# the script runs them all and exits non-zero when any of them found anything.
# Usage: tools/lint.sh   (from anywhere; the tools come from the project's .venv, made by `make .venv/.dev`,
# or from the virtual environment LINT_VENV names)
set -uo pipefail

cd "$(dirname "$0")/.."
BIN=${LINT_VENV:-.venv}/bin
PYTHON=$BIN/python
# The Kubernetes version the manifests must be valid for (one a managed cloud still runs): the
# one-node cluster's (tools/k8s/VERSION, declared once), as kubernetes-validate names its schemas (x.y.0).
K8S_VERSION=$(sed -n 's/^v\([0-9]*\.[0-9]*\)\..*/\1.0/p' tools/k8s/VERSION)

failed=()
check() {  # check NAME COMMAND...: run one check, remember its failure
    local name=$1
    shift
    echo "== $name"
    if "$@"; then echo "-- $name: ok"; else echo "-- $name: FAILED"; failed+=("$name"); fi
}

ruff() {
    # The rules, then the layout: `ruff format .` writes what `--check` asks for.
    "$PYTHON" -m ruff check --no-cache . && "$PYTHON" -m ruff format --no-cache --check . \
        && echo "ruff: $("$PYTHON" -m ruff check --no-cache --show-files . | grep -c '\.py$') Python files, checked and formatted"
}

mypy() {
    # What it checks and how strictly: pyproject.toml's [tool.mypy] (every module at the root,
    # every function annotated); then the code around the service, bodies checked, annotations optional.
    local around=(tests tools bench testkit jmeter)
    "$PYTHON" -m mypy && echo "mypy: $(ls ./*.py | wc -l) modules, annotated" &&
        "$PYTHON" -m mypy --allow-untyped-defs "${around[@]}" && echo "mypy: ${around[*]}, bodies checked"
}

hadolint() {
    # No ignored rules: no config file's ignore list, no inline ignore pragma, every severity fails.
    echo 'ignored: []' | "$BIN/hadolint" --config /dev/stdin --disable-ignore-pragma --failure-threshold style \
        --no-color Dockerfile && echo "hadolint: Dockerfile, every rule at every severity"
}

kubernetes() {
    # Every file a kustomization under k8s/ lists as a resource (not kustomize's own files, nor the
    # patches): kubernetes-validate exits 0 on a kind it has no schema for (a WARN line), so anything
    # but a "passed" line is a failure. prometheus-operator's kinds (components/monitoring) have no
    # schema here: tests/test_deploy.py and tests/test_alerts.py check those.
    local files=() out status
    mapfile -t files < <("$PYTHON" - <<'PY'
import pathlib, yaml
for k in sorted(pathlib.Path("k8s").rglob("kustomization.yaml")):
    for name in yaml.safe_load(k.read_text()).get("resources", []):
        path = k.parent / name
        if path.is_file() and not any(
            d and d.get("apiVersion", "").startswith("monitoring.coreos.com/") for d in yaml.safe_load_all(path.read_text())
        ):
            print(path)
PY
)
    out=$("$BIN/kubernetes-validate" --kubernetes-version "$K8S_VERSION" --strict "${files[@]}" 2>&1)
    status=$?
    echo "$out"
    [[ $status == 0 ]] || return 1
    if grep -v ' passed for resource ' <<<"$out" | grep -q .; then return 1; fi
    for f in "${files[@]}"; do
        grep -q "^INFO $f passed" <<<"$out" || { echo "no resource validated in $f"; return 1; }
    done
    echo "kubernetes-validate: ${#files[@]} manifests, strict, Kubernetes $K8S_VERSION"
}

openapi() {
    "$BIN/openapi-spec-validator" openapi.yaml openapi.json
}

check ruff ruff
check mypy mypy
check bandit "$PYTHON" tools/check_bandit.py
check hadolint hadolint
check kubernetes-validate kubernetes
check openapi-spec-validator openapi

if ((${#failed[@]})); then
    echo "lint: FAILED: ${failed[*]}"
    exit 1
fi
echo "lint: all checks passed"
