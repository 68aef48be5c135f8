#!/bin/sh
# Install cbq-engine, Couchbase's own SQL++ query engine (github.com/couchbase/query), into
# .tools/bin, once: later runs find it and return quietly. The tests run the service's nickname
# and username statements on it, behind CAVES's query port (tools/caves/queryimplforward.go,
# testkit/caves.py).
#
# LICENCE: github.com/couchbase/query is under the Business Source License 1.1. It is a test
# tool here, like CAVES and JMeter: built into .tools/ (git-ignored), never copied into the image
# (the Dockerfile's context is the service's *.py alone) and never shipped.
#
# How it builds from the Go module proxy alone (about 2 minutes on 2 cores, peak ~800 MB):
# - the proxy refuses this module's version list, @latest and tags (403), but serves the one
#   pseudo-version pinned below (the 7.6 development line);
# - its go.mod points at sibling checkouts (Couchbase's repo manifest): cbauth, go-couchbase,
#   go_json, gomemcached, goutils, godbc, gometa come from the proxy instead (go_json and
#   gomemcached at later versions, which have the APIs this revision calls);
# - the GSI and FTS clients (generated code not in any module; cbft/cbgt) and the enterprise
#   modules are small stand-ins (tools/cbq/standins): no secondary or search indexes, so
#   CREATE INDEX answers error 15010 and every plan is a primary scan;
# - server statistics are read from /proc (tools/cbq/systemStats.go) instead of libsigar (cgo);
# - the SQL++ parser is generated with goyacc, as the query repository's parser/n1ql/build.sh does;
# - tools/cbq/patch_source.py: three gomemcached signatures, CBQ_STANDALONE (no cluster manager),
#   and the file datastore's callers authenticated.
# The parser, planner, execution and expression packages are built as they are.
#
# Run: CBQ_STANDALONE=1 cbq-engine -datastore=DIR -http=127.0.0.1:P -https=127.0.0.1:P2
# over a file datastore DIR/default/<collection>/<key>.json (testkit/caves.py does it).
set -eu
MODULE=github.com/couchbase/query
VERSION=v0.0.0-20231201224521-b47444ea33a9
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/.tools/bin"
STAMP="$BIN/cbq-engine.version"
# The version and the recipe: a changed stand-in or edit rebuilds.
WANT="$VERSION $(find "$0" "$ROOT/tools/cbq" -type f | sort | xargs cat | cksum | cut -d' ' -f1)"

if [ -x "$BIN/cbq-engine" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
    exit 0
fi

GO=$(command -v go || echo /usr/local/go/bin/go)
if [ ! -x "$GO" ]; then
    echo "install_cbq_engine.sh: Go is needed to build cbq-engine (https://go.dev/dl/)" >&2
    exit 1
fi
PY=$(command -v python3)

echo "install_cbq_engine.sh: building cbq-engine $VERSION into $BIN (once, about 2 minutes)" >&2
started=$(date +%s)
export GO111MODULE=on GOFLAGS="-mod=mod -buildvcs=false"
SRC=$("$GO" mod download -json "$MODULE@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
WORK=$(mktemp -d)
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir "$WORK/src"
(cd "$SRC" && tar cf - --exclude=./test --exclude=./data --exclude=./tutorial --exclude=./docs .) | (cd "$WORK/src" && tar xf -)
chmod -R u+w "$WORK"  # the module cache is read-only

# The stand-ins: modules of their own, replacing the sibling checkouts.
STUBS="$WORK/stubs"
STANDINS="n1fty indexing plasma regulator query-ee eventing-ee cbft cbgt hebrew cbftx nitro"
cp -R "$ROOT/tools/cbq/standins" "$STUBS"
for m in $STANDINS; do
    mkdir -p "$STUBS/$m"
    printf 'module github.com/couchbase/%s\n\ngo 1.21\n' "$m" > "$STUBS/$m/go.mod"
done
cp "$ROOT/tools/cbq/systemStats.go" "$WORK/src/system/systemStats.go"

cd "$WORK/src"
for m in cbauth go-couchbase go_json gomemcached goutils godbc gometa; do
    "$GO" mod edit -dropreplace "github.com/couchbase/$m"
done
for m in $STANDINS; do "$GO" mod edit -replace "github.com/couchbase/$m=../stubs/$m"; done
"$GO" mod edit -require github.com/couchbase/go_json@v0.0.0-20250803152502-4641f4ef8578 \
    -require github.com/couchbase/gomemcached@v0.3.3
"$PY" "$ROOT/tools/cbq/patch_source.py"

# The parser, as parser/n1ql/build.sh generates it.
mkdir "$WORK/goyacc"
(cd "$WORK/goyacc" && "$GO" mod init goyacc >/dev/null 2>&1 && "$GO" get golang.org/x/tools@v0.16.0 >/dev/null 2>&1 \
    && "$GO" build -o "$WORK/goyacc/goyacc" golang.org/x/tools/cmd/goyacc)
(cd parser/n1ql && "$WORK/goyacc/goyacc" -o y.go n1ql.y >/dev/null && rm -f y.output)

mkdir -p "$BIN"
nice "$GO" build -o "$BIN/cbq-engine.tmp" ./server/cbq-engine
mv "$BIN/cbq-engine.tmp" "$BIN/cbq-engine"
echo "$WANT" > "$STAMP"
echo "install_cbq_engine.sh: installed $BIN/cbq-engine in $(( $(date +%s) - started )) s" >&2
