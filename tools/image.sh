#!/usr/bin/env bash
# Build the service's image from the Dockerfile: `make image`, and tests/test_image.py.
# Usage: tools/image.sh [TAG]   (default: userprofile-service:<pyproject.toml's version>, the image
#        the manifests run)
#
# - The engine is podman, or docker when only docker has a running daemon (ENGINE= overrides).
# - podman uses tools/containers.conf (runc, no default ulimits) unless CONTAINERS_CONF is set.
# - The Dockerfile's base image is pulled when missing; when it cannot be, a stand-in made of
#   Debian packages takes its name (tools/standin_base.sh) and this says so.
# - The host's CA bundle is mounted read-only into the build, so pip can reach the package index
#   through a TLS-inspecting proxy; it is never copied into a layer.
# Prints the build time and the image's size.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version *= *"\([^"]*\)".*/\1/p' pyproject.toml | head -n 1)
[ -n "$version" ] || { echo "image.sh: no version in pyproject.toml" >&2; exit 1; }
tag=${1:-userprofile-service:$version}
base=$(sed -n 's/^FROM *\([^ ]*\).*/\1/p' Dockerfile | head -n 1)

engine=${ENGINE:-}
if [ -z "$engine" ]; then
    if command -v podman >/dev/null; then
        engine=podman
    elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        engine=docker
    else
        echo "image.sh: neither podman nor a running docker: run tools/install_podman.sh" >&2
        exit 1
    fi
fi
export ENGINE=$engine
mkdir -p .tools/image
if [ "$engine" = podman ]; then
    export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/tools/containers.conf}
fi

# The base: the official image when it is here or can be pulled, else the stand-in. A stand-in
# left by an earlier run is replaced as soon as a pull succeeds.
case "$base" in */*/*) full=$base ;; */*) full=docker.io/$base ;; *) full=docker.io/library/$base ;; esac
label() {
    local value
    value=$("$engine" image inspect --format '{{ index .Config.Labels "userprofile.base-stand-in" }}' "$full" 2>/dev/null) || return 0
    [ "$value" = "<no value>" ] || echo "$value"
}
if ! "$engine" image inspect "$full" >/dev/null 2>&1 || [ -n "$(label)" ]; then
    if ! timeout 30 "$engine" pull --quiet "$full" >/dev/null 2>.tools/image/pull.err; then
        echo "image.sh: cannot pull $full: $(tail -n 1 .tools/image/pull.err)"
        if [ -z "$(label)" ]; then
            bash tools/standin_base.sh "$full"
        fi
    fi
fi
standin=$(label)
if [ -n "$standin" ]; then
    echo "image.sh: NOTE: built on a STAND-IN for $full ($standin), not the official image"
fi

build=("$engine" build --tag "$tag" --file Dockerfile --build-arg "VERSION=$version")
if [ "$engine" = podman ]; then
    # docker format keeps HEALTHCHECK (OCI has no field for it).
    build+=(--format docker)
    ca=/etc/ssl/certs/ca-certificates.crt
    if [ -r "$ca" ]; then
        # Mounted over the bundle pip itself reads (the official image's pip vendors certifi;
        # Debian's points it at the system bundle): a file that exists in the base, so the
        # mount leaves nothing behind, not even an empty mount point.
        pip_ca=$("$engine" run --rm --network none "$full" python3 -c \
            'from pip._vendor import certifi; print(certifi.where())' 2>/dev/null || true)
        if [ -n "$pip_ca" ]; then
            build+=(--volume "$ca:$pip_ca:ro")
        fi
    fi
fi
previous=$("$engine" image inspect --format '{{ .Id }}' "$tag" 2>/dev/null || true)
started=$(date +%s.%N)
"${build[@]}" . >.tools/image/build.log 2>&1 || { tail -n 30 .tools/image/build.log >&2; exit 1; }
# The image this tag named before is now untagged: drop it, or every rebuild keeps one more.
if [ -n "$previous" ] && [ "$previous" != "$("$engine" image inspect --format '{{ .Id }}' "$tag")" ]; then
    "$engine" rmi "$previous" >/dev/null 2>&1 || true
fi
seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
bytes=$("$engine" image inspect --format '{{ .Size }}' "$tag")
printf 'image.sh: built %s with %s in %.1f s (log: .tools/image/build.log)\n' "$tag" "$engine" "$seconds"
awk -v b="$bytes" 'BEGIN { printf "image.sh: image size %.1f MB\n", b / 1e6 }'
