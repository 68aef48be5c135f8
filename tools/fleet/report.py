"""The fleet's results: a row per scenario, balancer and client kind (failures by kind, p99
steady against during the change) and the Markdown table `make fleet` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .clients import Outcome


def p99(outcomes: list[Outcome]) -> float:
    ms = sorted(o.ms for o in outcomes if o.result == "ok")
    return ms[max(0, math.ceil(0.99 * len(ms)) - 1)] if ms else math.nan


L7 = ("haproxy-http", "nginx")
STEADY_WINDOW = 5  # seconds before a change whose latencies are the steady state


@dataclass
class Row:
    scenario: str
    balancer: str
    client: str
    requests: int
    failures: dict[str, int]  # failure kind -> count
    reused_failures: int = 0  # of them, on a reused connection
    close_answers: int = 0  # answers that carried Connection: close
    p99_steady: float = math.nan
    p99_change: float = math.nan
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def balancer_side(self) -> int:
        """Failures of the client's connection to an L7 balancer: the balancer's own doing.

        Behind an L7 balancer the service never holds the client's connection; whatever goes
        wrong toward the service reaches the client as a 5xx answer (a "HTTP ..." failure).
        """
        return sum(n for k, n in self.failures.items() if not k.startswith("HTTP ")) if self.balancer in L7 else 0

    @property
    def service_side(self) -> int:
        return self.failed - self.balancer_side


def row(
    scenario: str,
    balancer: str,
    client: str,
    outcomes: list[Outcome],
    change_start: float,
    change_end: float = math.inf,
    note: str = "",
    steady: list[Outcome] | None = None,
    **extra,
) -> Row:
    """Failures over all of outcomes; p99 in the steady seconds before change_start against the change."""
    failures: dict[str, int] = {}
    for o in outcomes:
        if o.result != "ok":
            failures[o.result] = failures.get(o.result, 0) + 1
    if steady is None:
        steady = [o for o in outcomes if change_start - STEADY_WINDOW <= o.start < change_start]
    change = [o for o in outcomes if change_start <= o.start <= change_end]
    return Row(
        scenario,
        balancer,
        client,
        len(outcomes),
        failures,
        sum(1 for o in outcomes if o.result != "ok" and o.reused),
        sum(1 for o in outcomes if o.close),
        p99(steady),
        p99(change),
        note,
        extra,
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | balancer | client | requests | failed | failures by kind | p99 steady ms "
        "| p99 during ms | answers with Connection: close | note |",
        "| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(r.failures.items())) or "-"
        if r.reused_failures:
            kinds += f" ({r.reused_failures} on reused connections)"
        if r.balancer_side:
            kinds += f"; {r.balancer_side} of them on the client's connection to {r.balancer} itself"
        fmt = lambda v: "-" if math.isnan(v) else f"{v:.1f}"  # noqa: E731
        lines.append(
            f"| {r.scenario} | {r.balancer} | {r.client} | {r.requests:,} | {r.failed} | {kinds} | "
            f"{fmt(r.p99_steady)} | {fmt(r.p99_change)} | {r.close_answers:,} | {r.note} |"
        )
    return "\n".join(lines)
