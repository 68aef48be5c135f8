#!/usr/bin/env bash
# Lay out Apache JMeter 5.6.x under the git-ignored .tools/ folder, once, from
# Maven Central (the one place this project may fetch Java artifacts from).
#
# Why not Debian's jmeter package: it is 2.13, and its XStream rejects JMeter's
# own classes (ForbiddenClassException), so it cannot load any plan.
# Why not the binary zip: only registries are reachable, and Maven Central
# carries JMeter as artifacts, not as the distribution archive.
#
# The layout is the one JMeter's launcher (bin/ApacheJMeter.jar) expects:
#   bin/ApacheJMeter.jar + bin/*.properties, log4j2.xml  (ApacheJMeter, ApacheJMeter_config)
#   lib/ext/ApacheJMeter_{core,http,components,functions}.jar  (where JMeter looks for test elements)
#   lib/*.jar  (their third-party dependencies, resolved transitively by Maven)
# Usage: tools/install_jmeter.sh      prints the path of the launcher jar.
# Re-running is a no-op once the marker file exists; delete .tools/jmeter-* to redo it.
set -euo pipefail

JMETER_VERSION="${JMETER_VERSION:-5.6.3}"
DEP_PLUGIN_VERSION="3.8.1"   # maven-dependency-plugin, pinned so the build is repeatable
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.tools/jmeter-$JMETER_VERSION"
MARKER="$DEST/.installed"

if [[ -f "$MARKER" ]]; then
    echo "$DEST/bin/ApacheJMeter.jar"
    exit 0
fi
command -v mvn >/dev/null || { echo "install_jmeter: mvn (Maven) is required" >&2; exit 1; }
command -v java >/dev/null || { echo "install_jmeter: java (17+) is required" >&2; exit 1; }

rm -rf "$DEST"
# lib/junit is scanned by the launcher, which complains when it is missing.
mkdir -p "$DEST/bin" "$DEST/lib/ext" "$DEST/lib/junit"
BUILD="$(mktemp -d)"
trap 'rm -rf "$BUILD"' EXIT

# A throw-away pom: one Maven run resolves and copies everything (each mvn start costs seconds).
JM_EXT="ApacheJMeter_core,ApacheJMeter_http,ApacheJMeter_components,ApacheJMeter_functions"
cat > "$BUILD/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.userprofile</groupId>
  <artifactId>jmeter-layout</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.jmeter</groupId><artifactId>ApacheJMeter_core</artifactId><version>$JMETER_VERSION</version></dependency>
    <dependency><groupId>org.apache.jmeter</groupId><artifactId>ApacheJMeter_http</artifactId><version>$JMETER_VERSION</version></dependency>
    <dependency><groupId>org.apache.jmeter</groupId><artifactId>ApacheJMeter_components</artifactId><version>$JMETER_VERSION</version></dependency>
    <dependency><groupId>org.apache.jmeter</groupId><artifactId>ApacheJMeter_functions</artifactId><version>$JMETER_VERSION</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId>
    <artifactId>maven-dependency-plugin</artifactId>
    <version>$DEP_PLUGIN_VERSION</version>
    <executions>
      <execution><id>third-party</id><phase>generate-resources</phase><goals><goal>copy-dependencies</goal></goals>
        <configuration><outputDirectory>$DEST/lib</outputDirectory><excludeArtifactIds>$JM_EXT,ApacheJMeter</excludeArtifactIds>
          <includeScope>runtime</includeScope></configuration></execution>
      <execution><id>jmeter-ext</id><phase>generate-resources</phase><goals><goal>copy-dependencies</goal></goals>
        <configuration><outputDirectory>$DEST/lib/ext</outputDirectory><includeArtifactIds>$JM_EXT</includeArtifactIds>
          <stripVersion>true</stripVersion></configuration></execution>
      <execution><id>launcher</id><phase>generate-resources</phase><goals><goal>copy</goal></goals>
        <configuration><outputDirectory>$DEST/bin</outputDirectory><stripVersion>true</stripVersion>
          <artifactItems><artifactItem><groupId>org.apache.jmeter</groupId><artifactId>ApacheJMeter</artifactId>
            <version>$JMETER_VERSION</version></artifactItem></artifactItems></configuration></execution>
      <execution><id>config</id><phase>generate-resources</phase><goals><goal>unpack</goal></goals>
        <configuration><outputDirectory>$DEST</outputDirectory>
          <artifactItems><artifactItem><groupId>org.apache.jmeter</groupId><artifactId>ApacheJMeter_config</artifactId>
            <version>$JMETER_VERSION</version><includes>bin/**</includes></artifactItem></artifactItems></configuration></execution>
    </executions>
  </plugin></plugins></build>
</project>
POM

echo "install_jmeter: resolving JMeter $JMETER_VERSION from Maven Central into $DEST" >&2
# Maven's output is kept for a failure only (it is noise otherwise).
if ! mvn -B -q --no-transfer-progress -Dstyle.color=never -f "$BUILD/pom.xml" generate-resources \
        >"$BUILD/mvn.log" 2>&1; then
    cat "$BUILD/mvn.log" >&2
    echo "install_jmeter: Maven could not resolve JMeter $JMETER_VERSION (is Maven Central reachable?)" >&2
    exit 1
fi
test -f "$DEST/bin/ApacheJMeter.jar" && test -f "$DEST/bin/jmeter.properties" \
    || { echo "install_jmeter: layout incomplete under $DEST" >&2; exit 1; }
touch "$MARKER"
echo "$DEST/bin/ApacheJMeter.jar"
