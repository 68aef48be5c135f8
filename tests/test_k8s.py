"""The blog's experiment on a real one-node Kubernetes (tools/k8s/e2e.py), its figures asserted.

The `k8s` tier: root, iptables and unshare, and about 12 minutes; `make k8s-e2e` runs it, `make test`
does not (pyproject.toml deselects the tier). Where the machine cannot run the cluster, the test fails
and says what is missing: it is never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from testkit import ROOT

pytestmark = pytest.mark.k8s

RESULTS = ROOT / "jmeter" / "results" / "k8s-e2e.json"


@pytest.fixture(scope="module")
def report() -> dict:
    missing = [] if os.geteuid() == 0 else ["root"]
    missing += [c for c in ("iptables", "unshare", "nsenter") if not shutil.which(c)]
    if missing:
        pytest.fail(f"a real Kubernetes cannot run here: missing {', '.join(missing)} (tests/README.md, k8s tier)")
    RESULTS.unlink(missing_ok=True)
    run = subprocess.run(
        [sys.executable, "-m", "tools.k8s.e2e", "--json", str(RESULTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    print(run.stdout[-6000:], run.stderr[-4000:])
    if not RESULTS.exists():
        pytest.fail(f"tools.k8s.e2e wrote no results (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(RESULTS.read_text())


def rows(report: dict, scenario: str) -> list[dict]:
    found = [r for r in report["rows"] if r["scenario"] == scenario]
    assert found, f"no {scenario} scenario ran: {report.get('failures')}"
    return found


@pytest.mark.parametrize("scenario", ["steady", "rollout", "delete", "scale-in", "scale-out", "hpa"])
def test_no_request_fails(report, scenario):
    for r in rows(report, scenario):
        assert "error" not in r, f"{r['store']} {scenario} did not finish: {r['error']}"
        assert r["requests"] > 1000, r
        assert r["jmeter_errors"] == 0, (r["store"], r["error_kinds"])
        assert r["service_other"] == 0, r  # the pods' own count of non-200 answers
        assert r["service_ok"] > 0.8 * r["requests"], r  # the pods counted what JMeter sent (looked at each second)


def test_new_pods_get_their_share_after_scale_out(report):
    for r in rows(report, "scale-out"):
        assert r["new_share"] >= 0.40, r


def test_the_hpa_scales_out_under_load_and_back_in(report):
    for r in rows(report, "hpa"):
        assert r["max_replicas"] > 4 and r["final_replicas"] == 4, r["replicas_over_time"]


def test_both_stores_ran_and_nothing_failed(report):
    assert set(report["stores"]) == {"embedded", "caves"}
    assert report["failures"] == []
    for store in report["stores"].values():
        assert store["first_pod_ready_s"] < 60, store


def test_the_kustomize_of_the_tests_is_the_clusters_kubectl():
    """tests/test_kustomize.py builds k8s/ with kustomize (tools/install_manifest_tools.sh); the
    cluster's kubectl (tools/k8s/VERSION) embeds its own: the two are the same version."""
    version = (ROOT / "tools" / "k8s" / "VERSION").read_text().strip()
    kubectl = ROOT / ".tools" / f"k8s-{version}" / "bin" / "kubectl"
    assert kubectl.exists(), f"no {kubectl}: tools/install_k8s.sh builds it (make k8s-e2e does)"
    said = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    script = (ROOT / "tools" / "install_manifest_tools.sh").read_text()
    wanted = script.split("KUSTOMIZE=", 1)[1].split()[0]
    assert f"Client Version: {version}" in said and f"Kustomize Version: {wanted}" in said, said
