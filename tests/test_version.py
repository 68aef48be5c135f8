"""One version, declared in pyproject.toml (buildinfo.py reads it), and everything that names it in
step: `--version`, /metrics' userprofile_build_info, openapi.yaml and openapi.json, CHANGELOG.md's
newest release, the image's tag and OCI label (tools/image.sh passes it; tests/test_image.py checks
the built image), and every image reference in k8s/ and the docs."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

import buildinfo
import metrics
import userprofile_service
from testkit import ROOT

pytestmark = pytest.mark.inprocess

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_version_is_semantic_and_buildinfo_reads_it():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION
    assert buildinfo.VERSION == VERSION


def test_version_flag_prints_it_with_python_and_the_sdk(capsys):
    with pytest.raises(SystemExit) as exited:
        userprofile_service.main(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"userprofile-service {VERSION} (Python {buildinfo.PYTHON}, couchbase SDK {buildinfo.SDK})"
    pinned = re.search(r"^couchbase==(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and pinned.group(1) == buildinfo.SDK, "the SDK reported is not the one requirements.txt pins"


def test_build_info_gauge_names_it():
    text = metrics.Metrics().render().decode()
    (line,) = [line for line in text.splitlines() if line.startswith("userprofile_build_info{")]
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    assert labels == {"version": VERSION, "python": buildinfo.PYTHON, "sdk": buildinfo.SDK}
    assert line.endswith("} 1")


def test_the_openapi_description_has_it():
    assert yaml.safe_load((ROOT / "openapi.yaml").read_text())["info"]["version"] == VERSION
    assert json.loads((ROOT / "openapi.json").read_text())["info"]["version"] == VERSION


def test_the_changelog_names_it_as_the_newest_release():
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - \d{4}-\d{2}-\d{2}$", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert releases and releases[0] == VERSION, releases


def test_the_image_is_built_tagged_and_labelled_with_it():
    """tools/image.sh reads pyproject.toml for the tag and the label; the Dockerfile copies the file in,
    so the service in the image reports it, and labels the image with what it was given."""
    script = (ROOT / "tools" / "image.sh").read_text()
    assert "pyproject.toml" in script and '--build-arg "VERSION=$version"' in script
    assert "tag=${1:-userprofile-service:$version}" in script
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bpyproject\.toml\b", dockerfile, re.M)
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile


def test_every_image_reference_in_the_manifests_and_docs_is_it():
    texts = [*(ROOT / "k8s").rglob("*.yaml"), *ROOT.glob("*.md"), *(ROOT / "k8s").glob("*.md"), ROOT / "Dockerfile"]
    found = {
        (path.relative_to(ROOT).as_posix(), tag)
        for path in texts
        for tag in re.findall(r"userprofile-service:(\d+\.\d+\.\d+)\b", path.read_text())
    }
    assert ("k8s/base/deployment.yaml", VERSION) in found, "the Deployment runs another image"
    assert {tag for _, tag in found} == {VERSION}, sorted(found)
