#!/usr/bin/env bash
# From Debian's archive, what the fleet and node-loss tests run: the load balancers
# tests/test_fleet.py and `make fleet` (tools/fleet.py) put in front of the service, haproxy
# (TCP and HTTP modes) and nginx-light (an HTTP/1.1 keep-alive upstream pool), both unprivileged
# on loopback ports, started by the test itself; and iptables and iproute2 (ip), with which
# tests/test_node_loss.py freezes and kills a Couchbase node in a private network namespace.
# Idempotent: installs only what is missing. Needs root, as apt-get does.
set -euo pipefail

missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

# Another apt-get may hold the lock on a shared machine: wait for it (up to 10 minutes).
apt_get() {
    apt-get -o DPkg::Lock::Timeout=600 "$@"
}
export DEBIAN_FRONTEND=noninteractive
apt_get update -qq
apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packages' own services are not wanted here (no init in a container; on a host, the
# test starts its own instances on free ports).
for service in haproxy nginx; do
    systemctl disable --now "$service" >/dev/null 2>&1 || true
done
echo "install_fleet.sh: installed ${missing[*]}"
