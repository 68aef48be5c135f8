"""k8s/components/monitoring: the alerts (a PrometheusRule) and the Grafana dashboard, checked with
Prometheus' own promtool.

- The rules: `promtool check rules` on the PrometheusRule's spec, and `promtool test rules` on
  alerts-test.yaml, whose cases make each alert fire and stay quiet; every alert has both.
- The dashboard: every panel's query, its Grafana variables given values, parses as PromQL
  (each wrapped as a recording rule for `promtool check rules`).
- Both name only metrics the service exports (metrics.py's exposition, the token check's refusals
  included) or kube-state-metrics'; their `route` labels are routes of routes.py.

promtool comes from Debian's `prometheus` package (make test installs it); without it these tests
fail, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import auth
import metrics
import routes
from testkit import ROOT

pytestmark = pytest.mark.external

MONITORING = ROOT / "k8s" / "components" / "monitoring"
RULE = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
ALERTS = [rule for group in RULE["spec"]["groups"] for rule in group["rules"]]
DASHBOARD = json.loads((MONITORING / "dashboard.json").read_text())
KUBE_STATE_METRICS = {"kube_deployment_status_replicas_unavailable"}
# What Grafana puts in a query before sending it, as a value promtool parses.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$namespace": "userprofile"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "rate", "irate", "increase", "histogram_quantile", "label_values", "abs", "clamp_min", "clamp_max",
    "round", "time", "vector", "scalar", "absent", "delta", "deriv",
}  # fmt: skip


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    found = shutil.which("promtool")
    assert found, "promtool is not installed: apt-get install prometheus (make test does, tools/install_debs.sh)"
    return subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def exported() -> set[str]:
    """Every sample name the service's /metrics can show: metrics.py's exposition, every family present."""

    class OneOpen:  # server.Connections, one connection open and busy
        def __len__(self) -> int:
            return 1

        def in_flight(self) -> int:
            return 1

    class Counting:  # a store that counts all it can
        def counters(self) -> dict[str, int]:
            return dict.fromkeys(metrics.STORE_COUNTERS, 0)

    m = metrics.Metrics(OneOpen(), Counting())
    m.observe("/api/v1/id", 200, 0.001)
    m.store_error("timeout")
    m.timed_out("idle")
    m.connection_rejected()
    m.expect_auth_refusals(auth.REASONS)
    m.key_set_fetch("ok")
    text = m.render().decode()
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    return names | KUBE_STATE_METRICS


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers, less label matchers and label
    lists, strings, durations, numbers and the language's own words."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    return {w for w in re.findall(r"[A-Za-z_:][\w:]*", expr) if w not in PROMQL_WORDS}


def routes_named(expr: str) -> set[str]:
    """The route label values an expression matches exactly or by regular expression (less `.+`)."""
    return set(re.findall(r'route\s*(?:=~|!~|!=|=)\s*"([^"]*)"', expr))


def check_route_matchers(expr: str) -> None:
    names = [r.name for r in routes.ROUTES]
    for value in routes_named(expr):
        assert any(re.fullmatch(value, name) for name in names), f"route {value!r} matches no route"


# -- the alerts ----------------------------------------------------------------------------------
def test_the_alerts_are_valid_rules_and_their_unit_tests_pass(tmp_path):
    (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(RULE["spec"]))
    shutil.copy(MONITORING / "alerts-test.yaml", tmp_path)
    checked = promtool("check", "rules", "alerts.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0 and f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )
    tested = promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_unit_tests_fail_when_an_alert_is_broken(tmp_path):
    """The cases are not vacuous: an alert that never fires, or fires on another label set, fails them."""
    shutil.copy(MONITORING / "alerts-test.yaml", tmp_path)
    for i, alert in enumerate(ALERTS):
        broken = yaml.safe_load(yaml.safe_dump(RULE["spec"]))
        broken["groups"][0]["rules"][i]["expr"] = f"({alert['expr']}) > 1e300"  # never
        (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(broken))
        tested = promtool("test", "rules", "alerts-test.yaml", cwd=tmp_path)
        failed = tested.stdout + tested.stderr
        assert tested.returncode != 0 and f"alertname: {alert['alert']}" in failed, (
            f"{alert['alert']}: never firing passed"
        )


def test_every_alert_has_a_firing_and_a_quiet_case_and_what_an_operator_reads():
    cases = yaml.safe_load((MONITORING / "alerts-test.yaml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for alert in ALERTS:
        mine = [c for c in checks if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no case where it stays quiet"
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert re.fullmatch(r"\d+m", alert.get("for", "")), f"{alert['alert']}: fires on one evaluation"


def test_the_alerts_name_metrics_the_service_exports():
    names = exported()
    for alert in ALERTS:
        assert metric_names(alert["expr"]) <= names, alert["alert"]
        assert metric_names(alert["expr"]), alert["alert"]
        check_route_matchers(alert["expr"])


# -- the dashboard -------------------------------------------------------------------------------
def queries() -> list[tuple[str, str]]:
    """(panel title, query with Grafana's variables given values) of every panel target."""
    found = []
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know: {expr}"
            found.append((panel["title"], expr))
    return found


def test_every_dashboard_query_parses(tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query{i}", "expr": expr} for i, (_, expr) in enumerate(queries())],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", "dashboard.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0 and f"SUCCESS: {len(queries())} rules found" in checked.stdout, (
        checked.stdout + checked.stderr
    )


def test_the_dashboard_names_metrics_the_service_exports_and_shows_what_an_operator_needs():
    names = exported()
    shown: set[str] = set()
    for title, expr in queries():
        assert metric_names(expr) and metric_names(expr) <= names, f"{title}: {metric_names(expr) - names}"
        check_route_matchers(expr)
        shown |= metric_names(expr)
    wanted = {
        "userprofile_requests_total",  # requests by route and status
        "userprofile_request_duration_seconds_bucket",  # latency quantiles
        "userprofile_store_errors_total",
        "userprofile_connections_open",
        "userprofile_store_replica_reads_total",
    }
    assert wanted <= shown, wanted - shown
    assert any("histogram_quantile(0.99" in expr for _, expr in queries())
    assert DASHBOARD["uid"] == "userprofile-service"
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    (generated,) = kustomization["configMapGenerator"]
    assert generated["files"] == ["userprofile-service.json=dashboard.json"]
