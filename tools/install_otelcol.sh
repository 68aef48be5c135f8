#!/bin/sh
# Build the OpenTelemetry Collector the trace tests send spans to (tests/test_tracing.py,
# testkit/otelcol.py) into .tools/bin/otelcol, once: later runs find it and return quietly.
# Its components: the OTLP receiver (core) and the file exporter (contrib), which writes every
# span it receives as a line of OTLP JSON, easy to assert on.
#
# The collector's builder (ocb) generates the distribution's sources. It cannot also resolve
# their modules: its `go mod tidy` follows the file exporter's test imports too, and the Go
# module proxy refuses one of them (otlpencodingextension v0.165.0: "403 not available"). So
# the builder only generates, and `go get` pins the release's modules (v0.165.0 for the
# unstable ones, v1.71.0 for the stable ones), which needs no test imports; then `go build`.
# About 3.5 minutes cold on 2 busy cores; 38 MB.
set -eu
VERSION=0.165.0  # the collector release: builder, receiver, exporter, otelcol, service
STABLE=1.71.0    # the same release's stable modules (confmap providers, processor)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.tools/bin"
STAMP="$BIN/otelcol.version"

if [ -x "$BIN/otelcol" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
    echo "$BIN/otelcol"
    exit 0
fi

GO=$(command -v go || echo /usr/local/go/bin/go)
if [ ! -x "$GO" ]; then
    echo "install_otelcol.sh: Go is needed to build the OpenTelemetry Collector (https://go.dev/dl/)" >&2
    exit 1
fi

echo "install_otelcol.sh: building the OpenTelemetry Collector $VERSION into $BIN (once)" >&2
WORK=$(mktemp -d)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"
GOBIN="$WORK/bin" "$GO" install "go.opentelemetry.io/collector/cmd/builder@v$VERSION"
cat > manifest.yaml <<EOF
dist:
  name: otelcol
  description: OTLP in, spans to a file (userprofile-service's trace tests)
  output_path: ./dist
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v$VERSION
exporters:
  - gomod: github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter v$VERSION
EOF
"$WORK/bin/builder" --config=manifest.yaml --skip-get-modules --skip-compilation >/dev/null 2>&1
cd dist
"$GO" mod init otelcol >/dev/null 2>&1
C=go.opentelemetry.io/collector
"$GO" get \
    "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter@v$VERSION" \
    "$C/receiver/otlpreceiver@v$VERSION" "$C/otelcol@v$VERSION" "$C/connector@v$VERSION" \
    "$C/service@v$VERSION" "$C/processor@v$STABLE" "$C/confmap/provider/envprovider@v$STABLE" \
    "$C/confmap/provider/fileprovider@v$STABLE" "$C/confmap/provider/httpprovider@v$STABLE" \
    "$C/confmap/provider/httpsprovider@v$STABLE" "$C/confmap/provider/yamlprovider@v$STABLE" 2>/dev/null
mkdir -p "$BIN"
GOFLAGS="-mod=mod -buildvcs=false" "$GO" build -trimpath -ldflags="-s -w" -o "$BIN/otelcol" .
echo "$VERSION" > "$STAMP"
echo "install_otelcol.sh: installed $BIN/otelcol" >&2
echo "$BIN/otelcol"
