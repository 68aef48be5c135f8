"""A short real run of the blog's JMeter plan against a real service process.

JMeter 5.6.x is laid out from Maven Central by tools/install_jmeter.sh on first use
(about 20 s; then reused from .tools/). The run goes through jmeter/loadtest.py, the
runner `make loadtest` uses, pointed at a service this test starts, so both the plan and
the runner are exercised, with a mix of id, nickname, username and picture requests whose
values exist in the seeded data; the results are then read here independently of the
runner: zero errors, a CSV header row, the weights, and exactly as many requests of each
route counted on the service's /metrics as JMeter reports samples.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import COUNT, SEED, TOKEN
from prometheus_client.parser import text_string_to_metric_families
from terminator import Pki

from testkit import ROOT, ServiceProcess, free_port, wait_until
from testkit.jmeter import MIX_ROUTES, mix_properties, write_lookups

PLAN = ROOT / "jmeter" / "userprofile.jmx"
DURATION = 10  # seconds of load: enough for thousands of samples, short enough for `make test`
THREADS = 4


def requests_by_route(svc: ServiceProcess) -> dict[str, int]:
    """The service's count of the mix's requests, by route (all statuses)."""
    status, _, body = svc.get("/metrics")
    assert status == 200
    counted = dict.fromkeys(MIX_ROUTES.values(), 0)
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == "userprofile_requests_total" and s.labels["route"] in counted:
                counted[s.labels["route"]] += int(s.value)
    return counted


@pytest.mark.inprocess
def test_plan_uses_exactly_the_documented_properties():
    text = PLAN.read_text()
    properties = {"threads", "duration", "token", "token_file", "host", "port", "protocol"}
    assert set(re.findall(r"__P\((\w+)", text)) == properties
    root = ET.fromstring(text)
    props = {e.get("name"): e.text for e in root.iter() if e.get("name")}
    script = props["script"] or ""
    assert set(re.findall(r'getProperty\("(\w+)",', script)) == {"lookups", "maxid", "maxpicture"}
    assert 'getProperty("weight_" + it' in script and set(MIX_ROUTES) == {"id", "nickname", "username", "picture"}
    for name in (
        "threads",
        "duration",
        "maxid",
        "maxpicture",
        "lookups",
        "token",
        "token_file",
        "host",
        "port",
        "protocol",
        *mix_properties("id=1"),
    ):
        assert name in text.split("-->", 1)[0], f"{name} is documented in the plan's header"
    assert props["ThreadGroup.num_threads"] == "${__P(threads,16)}"
    assert props["ThreadGroup.duration"] == "${__P(duration,180)}"
    assert props["ThreadGroup.ramp_time"] == "0"
    assert props["ThreadGroup.scheduler"] == "true"
    assert props["HTTPSampler.path"] == "${path}" and props["cacheKey"] == "true"
    assert "${" not in script, "JMeter would substitute it before Groovy runs"
    assert props["HTTPSampler.use_keepalive"] == "true"
    assert props["Header.value"] == "Bearer ${__P(token,)}${__FileToString(${__P(token_file,/dev/null)},,)}"
    assert props["HTTPSampler.protocol"] == "${__P(protocol,http)}"
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


@pytest.mark.inprocess
def test_a_mix_is_weights_of_its_routes():
    assert mix_properties("id=70, nickname=10,picture=5") == {
        "weight_id": 70,
        "weight_nickname": 10,
        "weight_username": 0,
        "weight_picture": 5,
    }
    for bad in ("id=0", "ids=1", "id=-1", "id", ""):
        with pytest.raises(ValueError):
            mix_properties(bad)


def loadtest(svc: ServiceProcess, target: str, work: Path, *extra: str, duration: int = DURATION):
    """jmeter/loadtest.py against ``target`` (the service, or what is in front of it), the token
    through the environment, not argv: its run, JMeter's rows, and the requests of the mix's
    routes the service itself counted meanwhile, by route."""
    before = requests_by_route(svc)
    jtl = work / "results.jtl"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "jmeter" / "loadtest.py"),
            *("--target", target, "--duration", str(duration), "--threads", str(THREADS), "--maxid", str(COUNT)),
            *("--jtl", str(jtl), "--json", str(work / "summary.json"), *extra),
        ],
        env={**os.environ, "USERPROFILE_TOKEN": TOKEN},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=duration + 180,
    )
    after = requests_by_route(svc)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    with open(jtl, newline="") as f:
        rows = list(csv.DictReader(f))
    return run, rows, {route: after[route] - before[route] for route in after}


@pytest.mark.external
def test_short_jmeter_run_has_no_errors_and_agrees_with_metrics(jmeter_installed, seeded_db, tmp_path):
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=tmp_path / "service.log")
    svc.start(wait_for="/readyz")
    lookups = write_lookups(tmp_path / "lookups.csv", COUNT, SEED)
    try:
        mix = ("--mix", "id=70,nickname=10,username=10,picture=10", "--lookups", str(lookups))
        # Twice the usual run: the mix's script is compiled (Groovy) at the first sample, which on
        # a machine busy with other work has taken most of a 10 s run; the weights below need hundreds.
        run, rows, counted = loadtest(svc, f"http://{svc.host}:{svc.port}", tmp_path, *mix, duration=2 * DURATION)
    finally:
        assert svc.stop() == 0
    jtl = tmp_path / "results.jtl"
    with open(jtl, newline="") as f:
        header = next(csv.reader(f))
    assert {"timeStamp", "elapsed", "label", "responseCode", "success", "URL"} <= set(header)
    assert len(rows) > 100, "a 20 s run on loopback makes far more requests than this"
    assert [r for r in rows if r["success"] != "true" or r["responseCode"] != "200"] == []
    by_route: dict[str, list[str]] = {}
    for r in rows:
        route, _, value = r["URL"].partition("/api/v1/")[2].rpartition("/")
        by_route.setdefault(route, []).append(value)
    ids = {int(value) for value in by_route["id"] + by_route["picture/raw"]}
    assert min(ids) >= 1 and max(ids) <= COUNT and len(ids) > 10, "random ids from 1..maxid"
    assert 0.5 < len(by_route["id"]) / len(rows) < 0.85, "the weights: id 70 of 100"
    assert min(len(by_route[r]) for r in ("nickname", "username", "picture/raw")) > 10
    assert {route: len(values) for route, values in by_route.items()} == {
        route.removeprefix("/api/v1/"): n for route, n in counted.items()
    }, "the service's /metrics disagrees with JMeter's samples"

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["samples"] == len(rows) and summary["errors"] == 0
    assert summary["metrics_delta"] == len(rows) and summary["routes"]["nickname"] == len(by_route["nickname"])
    assert "throughput" in run.stdout and "p99" in run.stdout
    # The token is never written out: not in the service log, JMeter's log, results or output.
    for text in (svc.log(), jtl.with_suffix(".log").read_text(), jtl.read_text(), run.stdout, run.stderr):
        assert TOKEN not in text


def haproxy_terminating_tls(work: Path, certificate: Path, backend_port: int) -> tuple[subprocess.Popen, int]:
    """haproxy in front of the service as an ingress is: TLS ends there, HTTP/1.1 keep-alive
    on both sides."""
    front = free_port()
    config = work / "haproxy.cfg"
    config.write_text(
        "global\n  maxconn 1000\n"
        "defaults\n  mode http\n  option http-keep-alive\n  timeout connect 5s\n"
        "  timeout client 30s\n  timeout server 30s\n"
        f"frontend tls\n  bind 127.0.0.1:{front} ssl crt {certificate}\n  default_backend service\n"
        f"backend service\n  server s1 127.0.0.1:{backend_port}\n"
    )
    with open(work / "haproxy.log", "ab") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    if not wait_until(lambda: proc.poll() is not None or port_open(front), 10):
        proc.kill()
        pytest.fail(f"haproxy did not listen: {(work / 'haproxy.log').read_text()}")
    assert proc.poll() is None, (work / "haproxy.log").read_text()
    return proc, front


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


@pytest.mark.external
def test_the_plan_drives_an_https_target_through_a_tls_terminator(jmeter_installed, seeded_db, tmp_path):
    """--target https://...: JMeter speaks TLS to haproxy (a certificate of a test CA, which
    JMeter accepts as it accepts any), haproxy plain HTTP to the service; every request
    succeeds, and the runner, trusting the test CA (--ca-cert), reads /metrics over TLS too."""
    pki = Pki(tmp_path)
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=tmp_path / "service.log")
    svc.start(wait_for="/readyz")
    haproxy, front = haproxy_terminating_tls(tmp_path, pki.server, svc.port)
    try:
        _, rows, counted = loadtest(svc, f"https://127.0.0.1:{front}", tmp_path, "--ca-cert", str(pki.ca), duration=5)
        untrusted = subprocess.run(  # the runner verifies what JMeter does not: without the CA, it stops
            [sys.executable, str(ROOT / "jmeter" / "loadtest.py"), "--target", f"https://127.0.0.1:{front}"],
            env={**os.environ, "USERPROFILE_TOKEN": TOKEN},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        haproxy.terminate()
        haproxy.wait(10)
        assert svc.stop() == 0
    assert len(rows) > 50
    assert [r for r in rows if r["success"] != "true" or r["responseCode"] != "200"] == []
    assert {r["URL"].split("/api/", 1)[0] for r in rows} == {f"https://127.0.0.1:{front}"}
    assert sum(counted.values()) == len(rows) == json.loads((tmp_path / "summary.json").read_text())["metrics_delta"]
    assert untrusted.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr[-2000:]
