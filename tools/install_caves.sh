#!/bin/sh
# Install CAVES (github.com/couchbaselabs/gocaves, Couchbase's cluster emulator
# for SDK tests) into .tools/bin, once: later runs find it and return quietly.
#
# Why not just `go install github.com/couchbaselabs/gocaves@v0.0.1-74`:
# - the Go module proxy no longer serves v0.0.1-74 ("403: not available"),
#   v0.0.1-75 is the only version it lists;
# - v0.0.1-75's go.mod has a `replace` directive, which `go install pkg@version`
#   refuses, and its published module lacks two generated packages (checksuite,
#   mock/data) that its own `make generated` step writes.
# So: fetch the module through the proxy, drop the replace (the package it
# redirects is only used by examples), run its generator, and build it.
#
# One addition of ours, tools/caves/queryimplforward.go: CAVES's advertised query port hands
# SQL++ requests to a real query engine (tools/install_cbq_engine.sh) when CAVES_QUERY_URL is
# set; without it, CAVES is as published (no query service). The stamp holds a checksum of
# that file, so a change to it rebuilds.
set -eu
VERSION=v0.0.1-75
MODULE=github.com/couchbaselabs/gocaves
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.tools/bin"
STAMP="$BIN/gocaves.version"
FORWARDER="$ROOT/tools/caves/queryimplforward.go"
WANT="$VERSION+queryforward-$(cksum < "$FORWARDER" | cut -d' ' -f1)"

if [ -x "$BIN/gocaves" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
    exit 0
fi

GO=$(command -v go || echo /usr/local/go/bin/go)
if [ ! -x "$GO" ]; then
    echo "install_caves.sh: Go is needed to build gocaves (https://go.dev/dl/)" >&2
    exit 1
fi

echo "install_caves.sh: building gocaves $WANT into $BIN (once)" >&2
export GO111MODULE=on GOFLAGS=-mod=mod
SRC=$("$GO" mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
WORK=$(mktemp -d)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cp -R "$SRC/." "$WORK"
chmod -R u+w "$WORK"  # the module cache is read-only
cd "$WORK"
"$GO" mod edit -dropreplace "$MODULE/client"
"$GO" run ./tools/prebuildstep.go >/dev/null
# The forwarder registers beside CAVES's own query handler (the ping), in the list of handlers.
cp "$FORWARDER" mock/mockimpl/svcimpls/
REGISTER='(&queryImplPing{}).Register(h)'
grep -qF "$REGISTER" mock/mockimpl/svcimpls/main.go || {
    echo "install_caves.sh: mock/mockimpl/svcimpls/main.go no longer registers queryImplPing" >&2
    exit 1
}
sed -i 's|(&queryImplPing{}).Register(h)|(\&queryImplPing{}).Register(h)\n\t(\&queryImplForward{}).Register(h)|' \
    mock/mockimpl/svcimpls/main.go
mkdir -p "$BIN"
"$GO" build -o "$BIN/gocaves.tmp" .
mv "$BIN/gocaves.tmp" "$BIN/gocaves"
echo "$WANT" > "$STAMP"
echo "install_caves.sh: installed $BIN/gocaves" >&2
