#!/usr/bin/env bash
# The container tools tests/test_image.py needs, from Debian's archive: podman (to build and
# run the image), runc (its runtime here: crun refuses a hybrid cgroup hierarchy), catatonit
# (the init of the pause image `podman kube play` builds; podman only recommends it) and
# mmdebstrap (builds the stand-in base image when the real one cannot be pulled).
# Idempotent: installs only what is missing. Needs root, as apt-get does.
set -euo pipefail

missing=()
for cmd in podman runc catatonit mmdebstrap; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
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
echo "install_podman.sh: installed ${missing[*]}"
