"""k8s/ as kustomize builds it, plainly (no --load-restrictor), as `kubectl kustomize`, `kubectl apply -k`
and a GitOps tool would: the default deployment, every overlay, every component on the base, and all
components at once with a digest-pinned image. Each build is validated (kubernetes-validate, strict,
the Kubernetes of tools/k8s/VERSION), checked for what a platform's checks ask (no replicas under the
HPA, ephemeral storage on every container, a NetworkPolicy on every pod), and scored by kube-score,
whose findings must each be listed with its reason in k8s/README.md ("Kubernetes linters").

kustomize and kube-score come from tools/install_manifest_tools.sh (make test-integration runs it); without them
these tests fail, saying so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]  # it ships no type information
import pytest
import yaml

from testkit import ROOT

pytestmark = pytest.mark.integration

K8S = ROOT / "k8s"
TOOLS = ROOT / ".tools" / "manifest-tools" / "bin"
K8S_VERSION = re.sub(r"^v(\d+\.\d+)\..*", r"\1.0", (ROOT / "tools" / "k8s" / "VERSION").read_text().strip())
DIGEST = "sha256:" + "0123456789abcdef" * 4
REGISTRY_IMAGE = "registry.example.com/team/userprofile-service"
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir())
# In the order k8s/kustomization.yaml lists them: the seeding Job before the CA it must trust too.
ALL_COMPONENTS = ["jwt", "jwt-ca", "seed", "couchbase-ca", "monitoring", "otel"]
# The kinds prometheus-operator defines: no schema for them here (tests/test_monitoring.py checks them).
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
KUBE_SCORE_OPTIONAL = [
    "container-seccomp-profile",
    "container-resource-requests-equal-limits",
    "container-ephemeral-storage-request-equals-limit",
    "container-ports-check",
]


def tool(name: str) -> Path:
    path = TOOLS / name
    assert path.exists(), f"{name} is not installed: run tools/install_manifest_tools.sh (make test-integration does)"
    return path


def build(folder: Path) -> list[dict]:
    """`kustomize build` with no flag: what `kubectl kustomize` and `kubectl apply -k` do."""
    done = subprocess.run([tool("kustomize"), "build", str(folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kustomize build {folder}: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def deployment_with(tmp_path: Path, components: list[str]) -> Path:
    """A user's kustomization as k8s/kustomization.yaml shows it, elsewhere: the base and these components,
    the CAs' ConfigMaps generated from files beside it, the image from a registry pinned by digest."""
    for name in ("couchbase-ca.pem", "auth-ca.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    relative = Path(os.path.relpath(K8S, tmp_path))  # kustomize takes no absolute path for a resource
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "userprofile",
        "resources": [str(relative / "base")],
        "components": [str(relative / "components" / c) for c in components],
        "configMapGenerator": [
            {"name": "userprofile-couchbase-ca", "files": ["ca.pem=couchbase-ca.pem"]},
            {"name": "userprofile-auth-ca", "files": ["ca.pem=auth-ca.pem"]},
        ],
        "images": [{"name": "userprofile-service", "newName": REGISTRY_IMAGE, "digest": DIGEST}],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return tmp_path


def pod_templates(docs: list[dict]) -> list[tuple[dict, dict]]:
    """(object, its pod template) of every Deployment and Job."""
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "Job")]


def containers(docs: list[dict]) -> list[dict]:
    return [c for _, t in pod_templates(docs) for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found


def platform_problems(docs: list[dict]) -> list[str]:
    """What a platform's admission checks ask of every build."""
    out = []
    for d in docs:
        if d["kind"] not in OPERATOR_KINDS:
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except Exception as exc:  # its ValidationError, or a kind it has no schema for
                out.append(f"{d['kind']}/{d['metadata']['name']}: {str(exc)[:300]}")
        if d["metadata"].get("namespace", "userprofile") != "userprofile" or (
            d["kind"] != "Namespace" and "namespace" not in d["metadata"]
        ):
            out.append(f"{d['kind']}/{d['metadata']['name']} not in the userprofile namespace")
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in docs if h["kind"] == "HorizontalPodAutoscaler"}
    out += [f"replicas on {d['metadata']['name']}, which the HPA scales" for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] in scaled and "replicas" in d["spec"]]  # fmt: skip
    for c in containers(docs):
        for bound in ("requests", "limits"):
            if "ephemeral-storage" not in c.get("resources", {}).get(bound, {}):
                out.append(f"{c['name']}: no ephemeral-storage {bound}")
    policies = [p["spec"]["podSelector"].get("matchLabels", {}) for p in docs if p["kind"] == "NetworkPolicy"]
    for obj, template in pod_templates(docs):
        labels = template["metadata"].get("labels", {})
        if not any(selector.items() <= labels.items() for selector in policies):
            out.append(f"{obj['kind']}/{obj['metadata']['name']}: no NetworkPolicy selects its pods")
    return out


BUILDS = ["k8s", "overlays/one-node", "overlays/embedded", "overlays/caves"]


def built(name: str, tmp_path: Path) -> list[dict]:
    if name == "k8s":
        return build(K8S)
    if name.startswith("overlays/"):
        return build(K8S / name)
    if name == "all components":
        return build(deployment_with(tmp_path, ALL_COMPONENTS))
    return build(deployment_with(tmp_path, [name.removeprefix("component ")]))


@pytest.mark.parametrize("name", [*BUILDS, *(f"component {c}" for c in COMPONENTS), "all components"])
def test_every_build_is_plain_and_passes_the_platform_checks(name, tmp_path):
    docs = built(name, tmp_path)
    assert platform_problems(docs) == []


def test_the_default_deployment_is_the_base():
    docs = build(K8S)
    assert {d["kind"] for d in docs} == {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy",
    }  # fmt: skip
    assert one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 4
    assert not any(d.get("data") or d.get("stringData") for d in docs if d["kind"] == "Secret"), "credentials in git"


def test_the_image_is_pinned_by_digest_in_every_pod(tmp_path):
    docs = build(deployment_with(tmp_path, ALL_COMPONENTS))
    assert {c["image"] for c in containers(docs)} == {f"{REGISTRY_IMAGE}@{DIGEST}"}


def test_the_components_add_what_they_say(tmp_path):
    docs = build(deployment_with(tmp_path, ALL_COMPONENTS))
    config = one(docs, "ConfigMap", "userprofile-config")["data"]
    assert config["COUCHBASE_TLS"] == "true" and config["AUTH_MODE"] == "jwt"
    assert {config["COUCHBASE_CA_CERT"], config["AUTH_CA_CERT"]} == {"/etc/couchbase-ca/ca.pem", "/etc/auth-ca/ca.pem"}
    # The generated CA ConfigMaps (their names with kustomize's hash) are what the pods mount, and
    # the seeding Job trusts the same Couchbase CA as the service.
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for obj, template in pod_templates(docs):
        mounted = {v["configMap"]["name"] for v in template["spec"]["volumes"] if "configMap" in v}
        assert mounted <= generated, obj["metadata"]["name"]
        assert any(m.startswith("userprofile-couchbase-ca-") for m in mounted), obj["metadata"]["name"]
    job = one(docs, "Job")
    secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert secrets == {"userprofile-couchbase-seed"}
    # The ServiceMonitor scrapes the metrics port through a Service that exposes it, not the load balancer.
    monitor = one(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    selected = [d for d in docs if d["kind"] == "Service"
                and monitor["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()]  # fmt: skip
    assert [s["metadata"]["name"] for s in selected] == ["userprofile-service-metrics"]
    assert [p["targetPort"] for p in selected[0]["spec"]["ports"] if p["name"] == endpoint["port"]] == ["metrics"]
    assert endpoint["path"] == "/metrics" and "metrics" not in {
        p["name"] for p in one(docs, "Service", "userprofile-service")["spec"]["ports"]
    }
    assert {"ServiceMonitor", "PrometheusRule"} <= {d["kind"] for d in docs}
    dashboard = one(docs, "ConfigMap", "userprofile-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["userprofile-service.json"])["uid"] == "userprofile-service"


def test_the_one_node_overlays_change_only_what_one_machine_needs():
    embedded, caves = build(K8S / "overlays" / "embedded"), build(K8S / "overlays" / "caves")
    deployment = one(embedded, "Deployment")["spec"]["template"]["spec"]
    assert "COUCHBASE_HOST" not in one(embedded, "ConfigMap")["data"]
    assert "env" not in deployment["containers"][0], "no Couchbase credentials on the embedded store"
    assert deployment["initContainers"][0]["image"] == deployment["containers"][0]["image"]
    assert deployment["containers"][0]["image"].startswith("localhost/userprofile-service:")
    # The emulator's own credentials, given by its overlay alone, to the service and the seeding Job.
    for name in ("userprofile-couchbase", "userprofile-couchbase-seed"):
        assert set(one(caves, "Secret", name)["stringData"]) == {"COUCHBASE_USER", "COUCHBASE_PASSWORD"}
    job = one(caves, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == one(caves, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert job["imagePullPolicy"] == "Never"
    assert one(caves, "ConfigMap")["data"]["COUCHBASE_HOST"] == "couchbase://10.96.0.50"


def listed_findings() -> set[str]:
    """The kube-score checks k8s/README.md lists, each with its reason, in its "Kubernetes linters" section."""
    text = (K8S / "README.md").read_text()
    section = text.split("### Kubernetes linters", 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M))


@pytest.mark.parametrize("name", [*BUILDS, "all components"])
def test_every_kube_score_finding_is_listed_with_its_reason(name, tmp_path):
    docs = built(name, tmp_path)
    optional = [f"--enable-optional-test={t}" for t in KUBE_SCORE_OPTIONAL]
    scored = subprocess.run(
        [tool("kube-score"), "score", "-", "--output-format", "json", *optional],
        input=yaml.safe_dump_all(docs),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert scored.stdout, scored.stderr
    found = {
        c["check"]["id"]
        for obj in json.loads(scored.stdout)
        for c in obj["checks"]
        if not c["skipped"] and c["grade"] < 10
    }
    assert found <= listed_findings(), "fix these, or list them in k8s/README.md with the reason they stay"
