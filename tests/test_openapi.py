"""The OpenAPI description: the same in YAML and JSON, describing every route,
served as it is, and true of the live service (schemathesis, every check,
against the real server). Its validity as OpenAPI is a lint: tools/lint.sh."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TOKEN

from routes import ROUTES
from testkit import ROOT, ServiceProcess

YAML = ROOT / "openapi.yaml"
JSON = ROOT / "openapi.json"
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
REGENERATE = "regenerate it: make openapi"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(YAML.read_text())


@pytest.mark.inprocess
def test_openapi_json_is_the_yaml_document(spec):
    with open(JSON) as f:
        assert json.load(f) == spec, f"openapi.json differs from openapi.yaml: {REGENERATE}"


@pytest.mark.inprocess
def test_the_document_and_the_route_table_agree(spec):
    """Each route of routes.ROUTES is a path of the document, with its methods (HEAD is
    GET's, implied) and its token requirement, and the document has no other path."""
    assert sorted(spec["paths"]) == sorted(r.shape for r in ROUTES)
    for route in ROUTES:
        operations = spec["paths"][route.shape]
        assert sorted(m.upper() for m in operations) == sorted(m for m in route.methods if m != "HEAD"), route
        for operation in operations.values():
            # A token: the document-wide requirement; no token: an empty override.
            assert operation.get("security", "document-wide") == ("document-wide" if route.needs_token else []), route
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["accessToken"] == {
        **schemes["accessToken"],
        "type": "apiKey",
        "in": "header",
        "name": "x-access-token",
    }
    assert spec["security"] == [{"bearerAuth": []}, {"accessToken": []}]  # either one
    for route in ROUTES:
        if route.needs_token:
            responses = spec["paths"][route.shape]["get"]["responses"]
            assert {"200", "400", "401", "404", "503", "504"} <= set(responses), route.shape
    for route in ROUTES:  # an ETag on every 200 of /api/v1/, and a 304 for If-None-Match
        responses = spec["paths"][route.shape]["get"]["responses"]
        assert ("ETag" in responses["200"].get("headers", {})) == route.etag, route.shape
        assert ("304" in responses) == route.etag, route.shape
        assert "Cache-Control" in responses["200"]["headers"], route.shape
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["status", "message"] and error["properties"]["status"]["enum"] == ["failure"]
    assert "WWW-Authenticate" in spec["components"]["responses"]["Unauthorized"]["headers"]


@pytest.mark.socket
def test_the_service_serves_openapi_json_as_it_is_without_a_token(server):
    status, headers, body = server.get("/api/v1/openapi.json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert body == JSON.read_bytes()


@pytest.mark.socket
def test_schemathesis_finds_no_5xx_and_every_answer_conforms(seeded_db, tmp_path):
    """Every schemathesis check (status codes, content types, headers, response schemas,
    405 on other methods, negative data rejected, auth not ignored) over all phases."""
    svc = ServiceProcess({"USERPROFILE_DB": str(seeded_db)}, log_path=tmp_path / "service.log")
    svc.start(wait_for="/readyz")
    try:
        result = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                str(YAML),
                "--url",
                f"http://{svc.host}:{svc.port}",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--checks",
                "all",
                "--max-examples",
                "40",
                "--seed",
                "6",
                "--workers",
                "2",
                "--generation-database",
                "none",
                "--request-timeout",
                "5",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert svc.proc is not None and svc.proc.poll() is None, "the service died under schemathesis"
        assert svc.get("/healthz")[0] == 200
    finally:
        svc.stop()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "Tested: 9" in out, out[-3000:]
    assert " passed" in out and "failure" not in out.lower().split("summary")[-1], out[-3000:]
    assert TOKEN not in out  # schemathesis filters it from its report
    log = svc.log()
    assert "Traceback" not in log and TOKEN not in log
    assert "status=5" not in log, [line for line in log.splitlines() if "status=5" in line][:5]
