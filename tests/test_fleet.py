"""The fleet while it changes: a rollout, scale-out and scale-in lose nothing (tools/fleet/).

One run of every scenario at once, about two minutes: 4 instances behind HAProxy in TCP mode
(as kube-proxy or an NLB), HAProxy in HTTP mode (as an ingress) and nginx (an HTTP/1.1
keep-alive upstream pool that follows the endpoints without a reload), each with the three
client kinds at 200 requests/s over 16 connections, through a rolling restart as the
Deployment does it, with JMeter on the TCP balancer too; scale-out 2 -> 4 and scale-in 4 -> 2
on L4; the idle race through 2 x 50 ms of network; a client that pipelines and never reads.
Every part is real: the service's processes, Debian's haproxy and nginx
(tools/install_fleet.sh), JMeter, sockets on loopback. `make fleet` prints the same table;
k8s/README.md holds a measured one.
"""

from __future__ import annotations

import pytest

import settings
from tools.fleet import scenarios as fleet  # the root is on the test path (pyproject.toml)
from tools.fleet.report import Row, table

pytestmark = pytest.mark.external


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[Row]:
    measured = fleet.run(workdir=tmp_path_factory.mktemp("fleet"))
    print("\n" + table(measured))
    return measured


def select(rows, scenario: str, balancer: str | None = None) -> list[Row]:
    found = [r for r in rows if r.scenario == scenario and (balancer is None or r.balancer == balancer)]
    assert found, f"no {scenario} ({balancer}) in the results"
    return found


def failures(found: list[Row], rows) -> str:
    return "\n" + table([r for r in found if r.failed]) + "\n\nall results:\n" + table(rows)


def test_every_client_group_was_really_loaded(rows):
    # A client that never reached the fleet would lose nothing: each paced group must have made
    # most of its requests (200/s over the whole run) and had nearly all of them answered.
    for r in rows:
        if r.scenario in ("rolling restart", "scale-out 2 -> 4", "nginx reloads alone"):
            assert r.requests > 3000, f"{r.balancer}/{r.client}: only {r.requests} requests"
        if r.scenario == "idle race":
            assert r.requests == 144, f"idle race {r.client}: {r.requests} requests"


def test_a_rolling_restart_loses_nothing_through_an_l4_balancer(rows):
    found = select(rows, "rolling restart", "haproxy-tcp")
    assert {r.client for r in found} >= {"check", "blind", "hint", "JMeter (HttpClient4)"}
    assert all(r.failed == 0 for r in found), failures(found, rows)


def test_a_rolling_restart_loses_nothing_through_haproxy_in_http_mode(rows):
    found = select(rows, "rolling restart", "haproxy-http")
    assert all(r.failed == 0 for r in found), failures(found, rows)


def test_a_rolling_restart_loses_nothing_through_nginx(rows):
    # nginx follows the endpoints without a reload, as ingress-nginx does: a reload closes the old
    # worker's idle client connections, and a client that reuses them without checking loses
    # requests whatever the instances do (the "nginx reloads alone" row, k8s/README.md).
    found = select(rows, "rolling restart", "nginx")
    assert {r.client for r in found} == set(fleet.KINDS)
    assert all(r.failed == 0 for r in found), failures(found, rows)


def test_drained_instances_exit_0_before_the_grace_period_ends(rows):
    for r in select(rows, "rolling restart") + select(rows, "scale-in 4 -> 2"):
        codes = r.extra["exit_codes"]
        assert codes and set(codes.values()) == {0}, f"{r.scenario}: exit codes {codes} (-9: killed at the grace)"


def test_scale_in_loses_nothing_for_a_blind_client_on_l4(rows):
    found = select(rows, "scale-in 4 -> 2")
    assert all(r.failed == 0 for r in found), failures(found, rows)


def test_scale_out_reaches_the_new_instances_through_l4(rows):
    (r,) = select(rows, "scale-out 2 -> 4")
    assert r.failed == 0, failures([r], rows)
    assert r.extra["share"] >= 0.40, r.note  # a fair share is 50%


def test_the_idle_race_loses_nothing_for_a_client_that_honours_the_hint(rows):
    (r,) = select(rows, "idle race")[:1]
    assert r.client == "hint"
    assert r.failed == 0, failures([r], rows)


def test_the_idle_race_loses_only_what_crossed_the_close_for_a_client_that_checks(rows):
    # A client that checks before reuse but ignores the hint sends, now and then, into a close
    # already on its way (k8s/README.md): no server can prevent that. What a server can get wrong
    # is to close before its idle timeout: a request sent more than a round trip (and a busy
    # machine's scheduling) before the deadline must never be lost. (A close late by the
    # watchdog's interval or a stalled thread only moves the race later: not checked.)
    (r,) = select(rows, "idle race")[1:]
    assert r.client == "check"
    slack = 0.2
    earliest = r.extra["idle_timeout"] - 2 * r.extra["delay"] - slack
    early = [idle for idle in r.extra["failed_idle"] if idle < earliest]
    assert not early, f"lost at idle {early} s, before {earliest:g} s: {r.note}"


def test_a_client_that_pipelines_and_never_reads_is_let_go(rows):
    (r,) = select(rows, "pipelining, never reading")
    assert r.extra["release_seconds"] <= r.extra["write_timeout"] + 5, r.note
    assert "max_requests_per_connection" in settings.BY_NAME, "no MAX_REQUESTS_PER_CONNECTION: no bound per connection"
    default = settings.BY_NAME["max_requests_per_connection"].default
    assert default is not None, "MAX_REQUESTS_PER_CONNECTION unset by default: no bound per connection"
    limit = int(default)
    assert r.extra["answers_per_connection"] <= limit, r.note
