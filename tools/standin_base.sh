#!/usr/bin/env bash
# A stand-in for the Dockerfile's base image, for machines that cannot pull it (only the package
# registries are reachable): the python3, pip and CA certificates of the Debian release the
# base's name ends with (python:3.13.16-slim-trixie: trixie, whose python3 is 3.13) in a minimal
# root filesystem, trimmed as Debian's slim images are, imported under the base image's name so
# the Dockerfile builds unchanged. Usage: tools/standin_base.sh IMAGE-NAME
# The root filesystem is cached in .tools/image/, one per release (one mmdebstrap run, a minute or two).
set -euo pipefail
cd "$(dirname "$0")/.."

name=$1
# The release is the tag's last word, so the Dockerfile's FROM line is the one place it is named.
suite=${name##*-}
suite=${suite%%@*}
case "$suite" in
    bookworm | trixie) ;;
    *) echo "standin_base.sh: $name does not end in a Debian release this knows (bookworm, trixie)" >&2; exit 1 ;;
esac
tarball=.tools/image/standin-$suite-python3.tar
engine=${ENGINE:-podman}

if [ ! -s "$tarball" ]; then
    command -v mmdebstrap >/dev/null || { echo "standin_base.sh: mmdebstrap missing: run tools/install_podman.sh" >&2; exit 1; }
    mkdir -p "$(dirname "$tarball")"
    log=.tools/image/standin-$suite.log
    echo "standin_base.sh: building the stand-in root filesystem with mmdebstrap (log: $log)"
    # python-is-python3: the Dockerfile runs `python` as the official image provides it.
    # EXTERNALLY-MANAGED removed: pip installs system-wide, as in the official image.
    # The merged-usr hook instead of the usrmerge package, which would pull in perl.
    mmdebstrap --quiet --format=tar --variant=minbase \
        --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/lintian/*' \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$suite" "$tarball.part" >"$log" 2>&1 || { tail -n 20 "$log" >&2; exit 1; }
    mv "$tarball.part" "$tarball"
fi

# The label says what this is wherever the image goes, including images built on it.
"$engine" import --quiet \
    --change "LABEL userprofile.base-stand-in=\"Debian $suite python3 from tools/standin_base.sh\"" \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$name" >/dev/null
echo "standin_base.sh: $name is the stand-in: Debian $suite python3 ($(du -m "$tarball" | cut -f1) MB tarball)"
