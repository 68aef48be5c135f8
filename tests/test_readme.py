"""The README stays a one-sitting read, and what it points to exists."""

from __future__ import annotations

import io
import re

import pytest

import loaddata
import routes
import settings
from httpparse import read_request
from metrics import Metrics
from service import Service, TokenKeeper
from stores import open_store
from testkit import ROOT

pytestmark = pytest.mark.inprocess

README = (ROOT / "README.md").read_text()


SECTIONS = ("Two commands", "The API", "Configuration", "Loading data", "Couchbase", "Design", "Where to change what")


def test_it_has_the_sections_a_reader_looks_for_in_order():
    headings = re.findall(r"^## (.+)$", README, re.M)
    found = [h for h in headings if h in SECTIONS]
    assert found == list(SECTIONS), headings


def test_it_reads_in_minutes():
    # Room to grow, not a cap hit by every addition: detail belongs beside what it describes.
    assert len(README) <= 13000, f"{len(README)} characters: move detail beside what it describes"


def test_every_file_it_names_exists():
    named = set(re.findall(r"`((?:[\w.-]+/)*[\w-]+\.(?:py|md|yaml|json|sh))`", README))
    assert {"bench/README.md", "k8s/README.md", "jmeter/README.md", "tests/README.md"} <= named
    missing = sorted(name for name in named if not (ROOT / name).exists() and name not in ("avatar.png",))
    assert not missing, missing


def test_the_design_table_names_every_module():
    design = README.split("## Design", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(\w+)\.py`", design))
    assert sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in named) == []


def test_every_make_target_it_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"\bmake ([\w-]+)", README))
    assert {"run", "test", "check", "bench", "image", "loadtest"} <= targets
    assert all(re.search(rf"^{t}:", makefile, re.M) for t in targets), targets


def test_the_api_table_is_the_route_table():
    """Its requests are routes.ROUTES' shapes, in their order; the 405's Allow is theirs."""
    api = README.split("## The API", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `GET (/[^`]*)` \|", api, re.M)
    assert listed == [re.sub(r"\{(\w+)\}", r"<\1>", route.shape) for route in routes.ROUTES]
    allows = {route.allow for route in routes.ROUTES}
    assert allows == {b"Allow: GET, HEAD\r\n"} and "(`Allow: GET, HEAD`)" in api


def test_the_example_requests_find_what_make_run_seeds(tmp_path, monkeypatch, capsys):
    """The curl lines, answered 200 by a service on the store `make run` seeds (loaddata.py's
    defaults: seed 1; its count), in-process."""
    count = re.search(r"loaddata\.py --count (\d+)", (ROOT / "Makefile").read_text().split("\nrun:", 1)[1])
    assert count is not None, "make run seeds with loaddata.py --count N"
    db = tmp_path / "userprofile.db"
    for name in [s.env for s in settings.SETTINGS if s.env.startswith("COUCHBASE_")]:
        monkeypatch.delenv(name, raising=False)  # the embedded store, as make run without a cluster
    assert loaddata.main(["--count", count[1], "--db", str(db), "--token", "readme-token"]) == 0
    capsys.readouterr()
    options = settings.defaults({"USERPROFILE_DB": str(db)})
    store = open_store(options)
    tokens = TokenKeeper(store, refresh=60)
    tokens.read()
    service = Service(store, tokens, Metrics(), b"{}", options)
    examples = re.findall(r'curl (?:-H "([^"]+)" )?localhost:8080(/[^\s;]*)', README)
    assert len(examples) >= 4 and any("nickname" in path for _, path in examples)
    for header, path in examples:
        line = header.replace("$TOKEN", "readme-token") + "\r\n" if header else ""
        request = read_request(io.BytesIO(f"GET {path} HTTP/1.1\r\nHost: x\r\n{line}\r\n".encode()), options)
        _, answer = service.do_GET(request)
        assert answer.status == 200, (path, answer.body)
    store.close()
