"""A fleet of service instances behind real load balancers, and what clients see while it changes.

Everything runs on loopback: N instances of ``userprofile_service.py`` on one embedded store
(seeded once with loaddata.py), HAProxy from Debian in TCP mode (as kube-proxy or a cloud NLB:
connections pinned to an instance, no retries) and in HTTP mode (as an ingress), nginx with an
HTTP/1.1 keep-alive upstream pool, and clients of three kinds that keep their connections
(check, blind, hint: clients.py) and JMeter.

The endpoint changes are made as a Kubernetes Deployment makes them (k8s/README.md): an
instance joins the balancer once its /readyz answers 200, leaves it 1 s after its replacement
joined, and gets SIGTERM after the 5 s preStop. HAProxy's servers change through its admin
socket; nginx changes without a reload, as ingress-nginx does: its upstream lists a port for
every instance the scenario will start (balancers.Nginx says why; --nginx-follows reloads
reloads it at each change instead, the way that loses requests).

    python3 -m tools.fleet                      # every scenario, then the summary table (`make fleet`)
    python3 -m tools.fleet --only rolling idle   # some of them (names: see scenarios.SCENARIOS)

tests/test_fleet.py runs the same scenarios and asserts the figures of k8s/README.md. The modules:
scenarios.py (the scenarios and `run`), __main__.py (the command line), instances.py (the service's
processes), balancers.py (HAProxy, nginx and the Fleet behind them), clients.py (the clients and
JMeter), delay.py (the delaying proxy) and report.py (the rows and the table). This file imports
none of them, so that ``python3 -m tools.fleet.clients`` (a client process) loads only what it uses.
"""
