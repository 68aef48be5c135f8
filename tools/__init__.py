"""The project's tools: scripts run by path (generate.py, soak.py, check_bandit.py) and the packages run with
``python3 -m`` from the root (tools.fleet, tools.k8s), as the Makefile's targets run them."""
