"""A real one-node Kubernetes for the service, and the blog's experiment on it (`make k8s`, `make k8s-e2e`).

Run from the project's root: ``python3 -m tools.k8s.cluster up|down|kubectl ...`` and
``python3 -m tools.k8s.e2e``. The modules, each importing only those listed before it:
config.py (the version, the paths and each component's configuration), kubectl.py (reaching the
running cluster: kubectl, a command in its namespaces, waiting), watch.py (the pods and their
counters, looked at every second), caves.py (CAVES as the cluster's Couchbase), cluster.py (up and
down) and e2e.py (the scenarios and their figures). VERSION, pause.c and Containerfile.pause are
read by tools/install_k8s.sh.
"""
