"""The deployment artifacts, checked without a Docker engine or a cluster.

- Dockerfile: the conventions the image relies on (pinned base, non-root, exec-form CMD...).
- k8s/: the manifests read here to check the probes, limits and security settings. Each of
  those checks is also run against a copy with that setting removed, so deleting one from
  the manifests can never pass unnoticed.

Linters (hadolint, kubernetes-validate --strict) run in tools/lint.sh, not here.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.inprocess

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
PORT = 8080


# -- Dockerfile ------------------------------------------------------------------
def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_conventions():
    ins = instructions()
    kinds = [k for k, _ in ins]
    args = dict(ins)  # the last of each kind
    # An official slim Python 3.13 base on Debian trixie, pinned to a patch version.
    base = r"python:3\.13\.\d+-slim-trixie(@sha256:[0-9a-f]{64})?"
    assert re.fullmatch(base, args["FROM"]), args["FROM"]
    # Dependencies installed without a cache, in a layer before the code is copied.
    copies = [a for k, a in ins if k == "COPY"]
    assert copies[0].split()[0] == "requirements.txt"
    pip = [i for i, (k, a) in enumerate(ins) if k == "RUN" and "pip install" in a]
    code = [i for i, (k, a) in enumerate(ins) if k == "COPY" and ".py" in a]
    assert pip and code and pip[0] < code[0]
    assert "--no-cache-dir" in ins[pip[0]][1]
    # Runs as a numeric non-root user (so Kubernetes' runAsNonRoot can verify it).
    user = args["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN")
    assert args["EXPOSE"] == str(PORT)
    # HEALTHCHECK with what the image has: python's urllib, no curl or wget; on the liveness path.
    health = args["HEALTHCHECK"]
    assert "urllib" in health and "/healthz" in health and not re.search(r"\b(curl|wget)\b", health)
    # Exec-form CMD, so the service is PID 1 and gets SIGTERM to drain.
    assert json.loads(args["CMD"])[-1] == "userprofile_service.py"
    # Configuration only through the environment: no secret baked in.
    env_text = " ".join(a for k, a in ins if k in ("ENV", "ARG"))
    assert not re.search(r"PASSWORD|TOKEN", env_text)


def test_dockerignore_keeps_the_context_to_what_the_image_needs():
    patterns = [
        p.strip()
        for p in (ROOT / ".dockerignore").read_text().splitlines()
        if p.strip() and not p.strip().startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: everything excluded first"
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    for _, arg in (i for i in instructions() if i[0] == "COPY"):
        for src in arg.split()[:-1]:
            if not src.startswith("--"):
                assert src in allowed, f"COPY {src} is excluded by .dockerignore"
        for src in arg.split()[:-1]:
            if not src.startswith("--"):
                assert list(ROOT.glob(src)), f"COPY {src}: no such file in the repository"
    assert not any(
        p.startswith("!") and p[1:].split("/")[0] in {"data", ".venv", ".tools", "tests", ".git"} for p in patterns
    )


# -- Kubernetes manifests ----------------------------------------------------------------
def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def load_manifests() -> dict[str, dict]:
    """Every resource kustomization.yaml lists, by kind (one of each kind here)."""
    docs: dict[str, dict] = {}
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                assert doc["kind"] not in docs, f"second {doc['kind']} in {name}"
                docs[doc["kind"]] = doc
    return docs


def test_kustomization_deploys_every_manifest():
    k = kustomization()
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files
    assert k["namespace"] == load_manifests()["Namespace"]["metadata"]["name"]


def container(docs: dict) -> dict:
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def prestop_seconds(c: dict) -> int:
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(cmd[-1]) if cmd[:1] == ["sleep"] else 0


def problems(docs: dict) -> list[str]:
    """What the deployment contract (issue 4) requires and these manifests lack."""
    out = []

    def need(ok, what):
        if not ok:
            out.append(what)

    for kind in (
        "Namespace",
        "Secret",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ):
        need(kind in docs, f"no {kind}")
    if out:
        return out
    dep, pod = docs["Deployment"], docs["Deployment"]["spec"]["template"]
    spec, c = pod["spec"], container(docs)
    labels = pod["metadata"].get("labels", {})
    config = docs["ConfigMap"].get("data", {})
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}

    def probe(name, path):
        get = c.get(name, {}).get("httpGet", {})
        need(get.get("path") == path, f"{name} not on {path}")
        need(get.get("port") in ("http", PORT) and ports.get("http") == PORT, f"{name} not on port {PORT}")

    need(dep["spec"].get("replicas") == 4, "Deployment does not start at 4 replicas")
    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    res = c.get("resources", {})
    for bound in ("requests", "limits"):
        for what in ("cpu", "memory"):
            need(what in res.get(bound, {}), f"no {what} {bound}")
    sc, psc = c.get("securityContext", {}), spec.get("securityContext", {})
    need(sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True, "runAsNonRoot not set")
    need(sc.get("readOnlyRootFilesystem") is True, "root filesystem not read-only")
    need(sc.get("allowPrivilegeEscalation") is False, "privilege escalation not disabled")
    need("ALL" in sc.get("capabilities", {}).get("drop", []), "capabilities not all dropped")
    need(spec.get("automountServiceAccountToken") is False, "service-account token mounted")
    # The kubelet's SIGKILL must come after the preStop pause plus the service's own drain.
    grace = spec.get("terminationGracePeriodSeconds")
    drain = float(config.get("SHUTDOWN_GRACE_SECONDS", 20)) + prestop_seconds(c)
    need(grace is not None and grace > drain, f"terminationGracePeriodSeconds {grace} not above {drain}")
    # The fleet's figures (k8s/README.md) rest on these: the pod leaves the endpoints before
    # SIGTERM, a rollout never lowers capacity, and an idle connection is closed within the drain.
    import settings

    need(prestop_seconds(c) > 0, "no preStop pause: SIGTERM would come before the endpoints drop the pod")
    rolling = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    need(rolling.get("maxUnavailable") in (0, "0%"), "a rollout may take pods away before new ones are ready")
    drain_idle = float(config.get("DRAIN_IDLE_SECONDS", settings.BY_NAME["drain_idle"].default))
    need(drain_idle < float(config.get("SHUTDOWN_GRACE_SECONDS", 20)), "DRAIN_IDLE_SECONDS not below the drain")
    ann = pod["metadata"].get("annotations", {})
    need(ann.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    need(ann.get("prometheus.io/port") == str(PORT), "no prometheus.io/port annotation")
    need(ann.get("prometheus.io/path") == "/metrics", "no prometheus.io/path annotation")
    # The embedded store's directory is writable despite the read-only root (an emptyDir).
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    db_dir = str(Path(config.get("USERPROFILE_DB", "/nowhere/x")).parent)
    need(db_dir in mounts, "USERPROFILE_DB directory not mounted")
    # Configuration from the ConfigMap, the password from the Secret and from nowhere else.
    need(
        {"configMapRef": {"name": docs["ConfigMap"]["metadata"]["name"]}} in c.get("envFrom", []),
        "ConfigMap not in envFrom",
    )
    pw = [e for e in c.get("env", []) if e["name"] == "COUCHBASE_PASSWORD"]
    need(
        bool(pw)
        and pw[0].get("valueFrom", {}).get("secretKeyRef", {}).get("name") == docs["Secret"]["metadata"]["name"],
        "COUCHBASE_PASSWORD not from the Secret",
    )
    need("COUCHBASE_PASSWORD" not in config, "password in the ConfigMap")
    need(bool(config.get("COUCHBASE_HOST")), "COUCHBASE_HOST not configured")

    svc = docs["Service"]["spec"]
    need(svc.get("type") == "LoadBalancer", "Service is not a LoadBalancer")
    need(svc.get("selector") and svc["selector"].items() <= labels.items(), "Service selects no pod")
    need(any(p.get("targetPort") in ("http", PORT) for p in svc.get("ports", [])), "Service port not to http")

    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    need(hpa.get("scaleTargetRef", {}).get("name") == dep["metadata"]["name"], "HPA targets another object")
    need(hpa.get("minReplicas") == 4 and hpa.get("maxReplicas") == 32, "HPA not 4..32")
    need(
        any(m.get("type") == "Resource" and m["resource"]["name"] == "cpu" for m in hpa.get("metrics", [])),
        "HPA not on CPU",
    )

    pdb = docs["PodDisruptionBudget"]["spec"]
    need(
        pdb.get("selector", {}).get("matchLabels", {}).items() <= labels.items() and pdb.get("selector"),
        "PDB selects no pod",
    )
    need("minAvailable" in pdb or "maxUnavailable" in pdb, "PDB sets no budget")

    ns = docs["Namespace"]["metadata"]["name"]
    need(
        all(d["metadata"].get("namespace") == ns for k, d in docs.items() if k != "Namespace"),
        "an object outside the namespace",
    )
    secret = docs["Secret"]
    need(not secret.get("data") and not secret.get("stringData"), "a password committed to git")
    return out


def test_manifests_meet_the_deployment_contract():
    assert problems(load_manifests()) == []


C = ("Deployment", "spec", "template", "spec", "containers", 0)
POD = ("Deployment", "spec", "template", "spec")
ANN = ("Deployment", "spec", "template", "metadata", "annotations")
REMOVALS = {
    "readiness probe": (*C, "readinessProbe"),
    "liveness probe": (*C, "livenessProbe"),
    "cpu request": (*C, "resources", "requests", "cpu"),
    "memory request": (*C, "resources", "requests", "memory"),
    "cpu limit": (*C, "resources", "limits", "cpu"),
    "memory limit": (*C, "resources", "limits", "memory"),
    "runAsNonRoot (container)": (*C, "securityContext", "runAsNonRoot"),
    "readOnlyRootFilesystem": (*C, "securityContext", "readOnlyRootFilesystem"),
    "allowPrivilegeEscalation": (*C, "securityContext", "allowPrivilegeEscalation"),
    "drop ALL": (*C, "securityContext", "capabilities", "drop"),
    "automountServiceAccountToken": (*POD, "automountServiceAccountToken"),
    "terminationGracePeriodSeconds": (*POD, "terminationGracePeriodSeconds"),
    "preStop": (*C, "lifecycle"),
    "maxUnavailable 0": ("Deployment", "spec", "strategy", "rollingUpdate", "maxUnavailable"),
    "replicas": ("Deployment", "spec", "replicas"),
    "scrape annotation": (*ANN, "prometheus.io/scrape"),
    "scrape port annotation": (*ANN, "prometheus.io/port"),
    "scrape path annotation": (*ANN, "prometheus.io/path"),
    "data volume": (*C, "volumeMounts"),
    "password from Secret": (*C, "env"),
    "LoadBalancer type": ("Service", "spec", "type"),
    "HPA minimum": ("HorizontalPodAutoscaler", "spec", "minReplicas"),
    "HPA maximum": ("HorizontalPodAutoscaler", "spec", "maxReplicas"),
    "HPA CPU metric": ("HorizontalPodAutoscaler", "spec", "metrics"),
    "PDB": ("PodDisruptionBudget",),
    "PDB budget": ("PodDisruptionBudget", "spec", "maxUnavailable"),
    "Secret": ("Secret",),
    "Namespace": ("Namespace",),
}


@pytest.mark.parametrize("what", sorted(REMOVALS))
def test_removing_a_required_setting_is_caught(what):
    docs = copy.deepcopy(load_manifests())
    *parents, last = REMOVALS[what]
    node: Any = docs  # a tree of YAML: mappings and lists
    for key in parents:
        node = node[key]
    del node[last]  # KeyError here means the manifests no longer have it at all
    if what == "runAsNonRoot (container)":  # either level satisfies it: remove both
        del docs["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
    assert problems(docs), f"removing the {what} went unnoticed"


def test_configmap_sets_only_variables_the_service_reads():
    """A misspelt variable would be silently ignored by the service: every key must be a setting."""
    import settings

    known = {s.env for s in settings.SETTINGS}
    for key in load_manifests()["ConfigMap"]["data"]:
        assert key in known, f"{key} is no setting of settings.py"
