"""The service's /metrics read back: Prometheus's text format, parsed once for every test and tool
that counts what the service counted (the fleet, the load test, the k8s e2e's watch, the tests)."""

from __future__ import annotations

import re

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample; comments and blank lines skipped."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name, _, labels = key.partition("{")
        found.append((name, dict(LABEL.findall(labels)), float(value)))
    return found


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include the given ones (all of them when none is given)."""
    return sum(
        value
        for sample, have, value in samples(text)
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )
