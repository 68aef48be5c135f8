#!/usr/bin/env bash
# Debian packages for the programs the tests and benchmarks run, each installed only when
# its command is missing. Arguments: COMMAND, or COMMAND=PACKAGE when the package has
# another name. Needs root, as apt-get does.
# Usage: tools/install_debs.sh wrk ip=iproute2
set -euo pipefail

missing=()
for wanted in "$@"; do
    command -v "${wanted%%=*}" >/dev/null || missing+=("${wanted#*=}")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

# Another apt-get may hold the lock on a shared machine: wait for it (up to 10 minutes)
# rather than fail.
apt_get() {
    apt-get -o DPkg::Lock::Timeout=600 "$@"
}
export DEBIAN_FRONTEND=noninteractive
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_debs.sh: installed ${missing[*]}"
