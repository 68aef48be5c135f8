#!/usr/bin/env bash
# Lay out Keycloak (the identity provider the JWT tests run against, testkit/idp.py) under the
# git-ignored .tools/ folder, once, from Maven Central: the server distribution is published
# there as org.keycloak:keycloak-quarkus-dist (tar.gz). Only the artifact is fetched, without
# resolving its POMs (they name a repository that is not reachable from CI machines).
#
# Then `kc.sh build` runs Quarkus's augmentation once (about 45 s) with the option fixed at
# build time (an in-memory database), so that each test run's `kc.sh start --optimized` skips it. Why Keycloak rather than Hydra: docs/auth.md.
# Usage: tools/install_keycloak.sh     prints the Keycloak home. Needs java (17+) and mvn.
# Re-running is a no-op once the marker exists; delete .tools/keycloak-* to redo it.
set -euo pipefail

KEYCLOAK_VERSION="${KEYCLOAK_VERSION:-26.7.3}"
DEP_PLUGIN_VERSION="3.8.1"   # maven-dependency-plugin, as tools/install_jmeter.sh pins it
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.tools/keycloak-$KEYCLOAK_VERSION"
MARKER="$DEST/.installed"

if [[ -f "$MARKER" ]]; then
    echo "$DEST"
    exit 0
fi
command -v mvn >/dev/null || { echo "install_keycloak: mvn (Maven) is required" >&2; exit 1; }
command -v java >/dev/null || { echo "install_keycloak: java (17+) is required" >&2; exit 1; }

BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT
echo "install_keycloak: fetching Keycloak $KEYCLOAK_VERSION from Maven Central into $DEST (once)" >&2
if ! mvn -B -q --no-transfer-progress -Dstyle.color=never \
        "org.apache.maven.plugins:maven-dependency-plugin:$DEP_PLUGIN_VERSION:copy" \
        "-Dartifact=org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
        "-DoutputDirectory=$BUILD" >"$BUILD/mvn.log" 2>&1; then
    cat "$BUILD/mvn.log" >&2
    echo "install_keycloak: Maven could not fetch keycloak-quarkus-dist $KEYCLOAK_VERSION" >&2
    exit 1
fi
rm -rf "$DEST"
mkdir -p "$ROOT/.tools"
tar -xzf "$BUILD/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" -C "$BUILD"
mv "$BUILD/keycloak-$KEYCLOAK_VERSION" "$DEST"
echo "install_keycloak: building its Quarkus application once (about a minute)" >&2
if ! JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m" "$DEST/bin/kc.sh" build --db=dev-mem \
        >"$BUILD/build.log" 2>&1; then
    cat "$BUILD/build.log" >&2
    echo "install_keycloak: kc.sh build failed" >&2
    exit 1
fi
touch "$MARKER"
echo "$DEST"
