#!/usr/bin/env bash
# From Debian's archive, what the fleet and node-loss tests run: the load balancers
# tests/test_fleet.py and `make fleet` (python3 -m tools.fleet) put in front of the service, haproxy
# (TCP and HTTP modes) and nginx-light (an HTTP/1.1 keep-alive upstream pool), both unprivileged
# on loopback ports, started by the test itself; and iptables and iproute2 (ip), with which
# tests/test_node_loss.py freezes and kills a Couchbase node in a private network namespace.
# Idempotent: installs only what is missing. Needs root, as apt-get does.
set -euo pipefail

bash "$(dirname "$0")/install_debs.sh" haproxy nginx=nginx-light iptables ip=iproute2
# The packages' own services are not wanted here (no init in a container; on a host, the
# test starts its own instances on free ports).
for service in haproxy nginx; do
    systemctl disable --now "$service" >/dev/null 2>&1 || true
done
