#!/usr/bin/env bash
# The two programs tests/test_kustomize.py runs on the manifests, without a cluster, built from the
# Go module proxy into .tools/manifest-tools/bin (each only when missing, and it says which):
# - kustomize, the engine of `kubectl kustomize`, at the version kubectl of tools/k8s/VERSION embeds
#   (v1.34: kustomize v5.7.1; tests/test_k8s.py checks the cluster's kubectl says the same);
# - kube-score, a Kubernetes linter (kube-linter is not served by the proxy); its findings are fixed
#   or listed with their reason in k8s/README.md, and the test holds them to that list.
# Usage: tools/install_manifest_tools.sh
set -euo pipefail

KUSTOMIZE=v5.7.1
KUBE_SCORE=v1.20.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/manifest-tools/bin"
GO="$(command -v go || echo /usr/local/go/bin/go)"

build() {  # build NAME MODULE@VERSION: go install into $BIN, unless NAME-VERSION is there
    local name=$1 module=$2 version=${2##*@}
    [ -x "$BIN/$name-$version" ] && return 0
    [ -x "$GO" ] || { echo "install_manifest_tools: Go is needed to build $name (https://go.dev/dl/)" >&2; exit 1; }
    echo "install_manifest_tools: building $name $version into $BIN" >&2
    local started=$SECONDS work
    work=$(mktemp -d)
    GOBIN="$work" CGO_ENABLED=0 nice "$GO" install -ldflags "-s -w" "$module"
    mkdir -p "$BIN"
    mv "$work/$name" "$BIN/$name-$version"
    rmdir "$work"
    ln -sf "$name-$version" "$BIN/$name"
    echo "install_manifest_tools: built $name in $((SECONDS - started)) s" >&2
}
build kustomize "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE"
build kube-score "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE"
