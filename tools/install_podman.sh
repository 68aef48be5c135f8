#!/usr/bin/env bash
# The container tools tests/test_image.py needs, from Debian's archive: podman (to build and
# run the image), runc (its runtime here: crun refuses a hybrid cgroup hierarchy), catatonit
# (the init of the pause image `podman kube play` builds; podman only recommends it) and
# mmdebstrap (builds the stand-in base image when the real one cannot be pulled).
# Idempotent: installs only what is missing. Needs root, as apt-get does.
set -euo pipefail
exec bash "$(dirname "$0")/install_debs.sh" podman runc catatonit mmdebstrap
