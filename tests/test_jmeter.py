"""A short real run of the blog's JMeter plan against a real service process.

JMeter 5.6.x is laid out from Maven Central by tools/install_jmeter.sh on first use
(about 20 s; then reused from .tools/). The run goes through jmeter/loadtest.py, the
runner `make loadtest` uses, pointed at a service this test starts, so both the plan and
the runner are exercised; the results are then read here independently of the runner:
zero errors, a CSV header row, and exactly as many /api/v1/id requests counted on the
service's /metrics as JMeter reports samples.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import COUNT, TOKEN
from prometheus_client.parser import text_string_to_metric_families

from testkit import ROOT, ServiceProcess

PLAN = ROOT / "jmeter" / "userprofile.jmx"
DURATION = 10  # seconds of load: enough for thousands of samples, short enough for `make test`
THREADS = 4


def id_requests(svc: ServiceProcess) -> int:
    status, _, body = svc.get("/metrics")
    assert status == 200
    return int(
        sum(
            s.value
            for fam in text_string_to_metric_families(body.decode())
            for s in fam.samples
            if s.name == "userprofile_requests_total" and s.labels["route"] == "/api/v1/id"
        )
    )


@pytest.mark.inprocess
def test_plan_uses_exactly_the_six_documented_properties():
    text = PLAN.read_text()
    assert set(re.findall(r"__P\((\w+)", text)) == {"threads", "duration", "maxid", "token", "host", "port"}
    root = ET.fromstring(text)
    props = {e.get("name"): e.text for e in root.iter() if e.get("name")}
    assert props["ThreadGroup.num_threads"] == "${__P(threads,16)}"
    assert props["ThreadGroup.duration"] == "${__P(duration,180)}"
    assert props["ThreadGroup.ramp_time"] == "0"
    assert props["ThreadGroup.scheduler"] == "true"
    assert props["HTTPSampler.path"] == "/api/v1/id/${__Random(1,${__P(maxid,10000)})}"
    assert props["HTTPSampler.use_keepalive"] == "true"
    assert props["Header.value"] == "Bearer ${__P(token,)}"
    assert props["Assertion.test_field"] == "Assertion.response_code"
    assert "test-token" not in text and "Bearer ey" not in text  # no token stored in the plan


@pytest.fixture(scope="module")
def jmeter_installed():
    try:
        subprocess.run(
            ["bash", str(ROOT / "tools" / "install_jmeter.sh")], check=True, capture_output=True, text=True, timeout=600
        )
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"JMeter install failed (needs java 17 and mvn):\n{exc.stderr[-3000:]}")


@pytest.mark.external
def test_short_jmeter_run_has_no_errors_and_agrees_with_metrics(jmeter_installed, seeded_db, tmp_path):
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=tmp_path / "service.log")
    svc.start(wait_for="/readyz")
    try:
        before = id_requests(svc)
        jtl, summary_json = tmp_path / "results.jtl", tmp_path / "summary.json"
        run = subprocess.run(
            [
                sys.executable,
                str(ROOT / "jmeter" / "loadtest.py"),
                "--target",
                f"http://{svc.host}:{svc.port}",
                "--duration",
                str(DURATION),
                "--threads",
                str(THREADS),
                "--maxid",
                str(COUNT),
                "--jtl",
                str(jtl),
                "--json",
                str(summary_json),
            ],
            env={**os.environ, "USERPROFILE_TOKEN": TOKEN},  # the token through the environment, not argv
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DURATION + 180,
        )
        counted = id_requests(svc) - before
    finally:
        assert svc.stop() == 0
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]

    with open(jtl, newline="") as f:
        header = next(csv.reader(f))
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert {"timeStamp", "elapsed", "label", "responseCode", "success", "URL"} <= set(header)
    assert len(rows) > 100, "a 10 s run on loopback makes far more requests than this"
    assert [r for r in rows if r["success"] != "true" or r["responseCode"] != "200"] == []
    ids = {int(r["URL"].rsplit("/", 1)[1]) for r in rows}
    assert min(ids) >= 1 and max(ids) <= COUNT and len(ids) > 10, "random ids from 1..maxid"
    assert counted == len(rows), "the service's /metrics disagrees with JMeter's sample count"

    summary = json.loads(summary_json.read_text())
    assert summary["samples"] == len(rows) and summary["errors"] == 0
    assert summary["metrics_delta"] == len(rows)
    assert "throughput" in run.stdout and "p99" in run.stdout
    # The token is never written out: not in the service log, JMeter's log, results or output.
    for text in (svc.log(), jtl.with_suffix(".log").read_text(), jtl.read_text(), run.stdout, run.stderr):
        assert TOKEN not in text
