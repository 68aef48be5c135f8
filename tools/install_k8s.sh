#!/usr/bin/env bash
# Everything tools/k8s/cluster.py needs, each part only when missing (and it says which):
# - Debian's etcd-server, containerd, runc, CNI plugins, iptables, conntrack (tools/install_debs.sh);
# - the Kubernetes binaries, from the Go module proxy, into .tools/k8s-$VERSION/bin (cold: ~6 min for
#   the five components and kubectl, ~3 min for metrics-server, on 2 busy cores; a warm Go cache makes
#   a rebuild cheap);
# - the pause image, a static build of tools/k8s/pause.c FROM scratch (podman).
#
# Why a wrapper module: k8s.io/kubernetes is not meant to be a dependency. Its go.mod asks for
# its staging modules (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and points them at its own
# tree with `replace`, which a dependent module ignores; so the wrapper replaces each of them with
# its published tag (v0.$MINOR.$PATCH), as the release tooling does.
# metrics-server is built in its own module, with its own go.mod (its k8s libraries differ).
# Usage: tools/install_k8s.sh      (the version of tools/k8s/VERSION; METRICS_SERVER=v0.8.0 by default)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Declared once, in tools/k8s/VERSION: this script, tools/k8s/config.py and tools/lint.sh read it.
VERSION="$(cat "$ROOT/tools/k8s/VERSION")"
METRICS_SERVER="${METRICS_SERVER_VERSION:-v0.8.0}"
DEST="$ROOT/.tools/k8s-$VERSION"
BIN="$DEST/bin"
GO="$(command -v go || echo /usr/local/go/bin/go)"
[ -x "$GO" ] || { echo "install_k8s: Go is needed to build Kubernetes (https://go.dev/dl/)" >&2; exit 1; }

bash "$ROOT/tools/install_debs.sh" etcd=etcd-server containerd runc ctr=containerd \
    /usr/lib/cni/bridge=containernetworking-plugins iptables conntrack unshare=util-linux \
    nsenter=util-linux openssl gcc podman

declare -A CMD=(
    [kube-apiserver]=cmd/kube-apiserver
    [kube-controller-manager]=cmd/kube-controller-manager
    [kube-scheduler]=cmd/kube-scheduler
    [kubelet]=cmd/kubelet
    [kube-proxy]=cmd/kube-proxy
    [kubectl]=cmd/kubectl
)
missing=()
for name in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$BIN/$name" ] || missing+=("$name")
done

mkdir -p "$BIN"
# Go builds in parallel on every core; nice keeps a shared machine responsive meanwhile.
if [ ${#missing[@]} -gt 0 ]; then
    echo "install_k8s: building ${missing[*]} $VERSION into $BIN (cold: ~10-15 min on 2 cores)" >&2
    started=$SECONDS
    MOD="$DEST/src/kubernetes"
    mkdir -p "$MOD"
    staging_tag="v0.${VERSION#v1.}"
    # The staging modules are the k8s.io/* lines that k8s.io/kubernetes replaces with ./staging.
    staging=$(curl -fsS "${GOPROXY_URL:-https://proxy.golang.org}/k8s.io/kubernetes/@v/$VERSION.mod" \
        | sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p')
    {
        echo "module local/k8s-wrapper"
        echo
        echo "go 1.24.0"
        echo
        echo "godebug default=go1.24 // as k8s.io/kubernetes's own go.mod"
        echo
        echo "require k8s.io/kubernetes $VERSION"
        echo
        echo "replace ("
        for module in $staging; do echo "	$module => $module $staging_tag"; done
        echo ")"
    } > "$MOD/go.mod"
    pkgs=()
    for name in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/${CMD[$name]}"); done
    # The version the binaries report (kubectl version, the node's kubelet version).
    ldflags="-s -w"
    for var in gitVersion=$VERSION gitMajor=1 gitMinor=$(echo "$VERSION" | cut -d. -f2) \
               gitTreeState=clean buildDate=1970-01-01T00:00:00Z; do
        ldflags+=" -X k8s.io/component-base/version.$var -X k8s.io/client-go/pkg/version.$var"
    done
    # No `go mod tidy`: the wrapper has no Go file, so tidy would drop the requirement itself.
    (cd "$MOD" && GOFLAGS=-mod=mod nice "$GO" get "${pkgs[@]/%/@$VERSION}" 2>&1 | grep -v '^go: \(downloading\|finding\|found\|added\|upgraded\)' >&2 || true
     cd "$MOD" && GOFLAGS=-mod=mod CGO_ENABLED=0 nice "$GO" build -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}")
    echo "install_k8s: built ${missing[*]} in $((SECONDS - started)) s" >&2
else
    echo "install_k8s: kube binaries $VERSION cached in $BIN" >&2
fi

if [ ! -x "$BIN/metrics-server" ]; then
    echo "install_k8s: building metrics-server $METRICS_SERVER into $BIN" >&2
    started=$SECONDS
    GOBIN="$BIN" CGO_ENABLED=0 nice "$GO" install -ldflags "-s -w" \
        "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER"
    echo "install_k8s: built metrics-server in $((SECONDS - started)) s" >&2
fi

PAUSE_IMAGE=localhost/userprofile-k8s/pause:static
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/tools/containers.conf}"
if ! podman image exists "$PAUSE_IMAGE"; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    gcc -static -O2 -o "$work/pause" "$ROOT/tools/k8s/pause.c"
    podman build --quiet --tag "$PAUSE_IMAGE" --file "$ROOT/tools/k8s/Containerfile.pause" "$work" >/dev/null
    echo "install_k8s: built the pause image $PAUSE_IMAGE" >&2
fi
