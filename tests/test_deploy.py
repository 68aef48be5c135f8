"""The deployment artifacts, checked without a Docker engine or a cluster.

- Dockerfile: the conventions the image relies on (pinned base, non-root, exec-form CMD...).
- k8s/base/: the manifests read here to check the probes, limits, security settings and the
  NetworkPolicy. Each of those checks is also run against a copy with that setting removed, so
  deleting one from the manifests can never pass unnoticed. The seeding Job (k8s/components/seed)
  meets the same contract for its container.

Linters (hadolint, kubernetes-validate --strict) run in tools/lint.sh; the overlays and components
built with kustomize: tests/test_kustomize.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from testkit import ROOT

pytestmark = pytest.mark.inprocess

K8S = ROOT / "k8s"
BASE = K8S / "base"
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
def kustomization(folder: Path = BASE) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def load_manifests(folder: Path = BASE) -> dict[str, dict]:
    """Every resource a kustomization lists, by kind (one of each kind in each folder here)."""
    docs: dict[str, dict] = {}
    for name in kustomization(folder)["resources"]:
        for doc in yaml.safe_load_all((folder / name).read_text()):
            if doc:
                assert doc["kind"] not in docs, f"second {doc['kind']} in {name}"
                docs[doc["kind"]] = doc
    return docs


def test_kustomization_deploys_every_manifest():
    k = kustomization()
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files
    assert k["namespace"] == load_manifests()["Namespace"]["metadata"]["name"]
    # What `kubectl apply -k k8s/` deploys is the base, by directory (so overlays can name it too).
    assert kustomization(K8S)["resources"] == ["base"]


def container(docs: dict) -> dict:
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def prestop_seconds(c: dict) -> int:
    cmd = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return int(cmd[-1]) if cmd[:1] == ["sleep"] else 0


def default(env: str) -> str:
    """A setting's default, as the service has it: settings.py's table, or the image's ENV."""
    import settings

    image_env = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for k, a in instructions() if k == "ENV")))
    return image_env.get(env) or next(s.default for s in settings.SETTINGS if s.env == env) or ""


RESOURCES = ("cpu", "memory", "ephemeral-storage")


def container_problems(c: dict, pod_spec: dict) -> list[str]:
    """What every container of the service's image must have, in the Deployment and the seeding Job:
    requests and limits (ephemeral storage too), the restricted security context, no API token."""
    out = []
    res = c.get("resources", {})
    out += [f"{c['name']}: no {what} {bound}" for bound in ("requests", "limits") for what in RESOURCES
            if what not in res.get(bound, {})]  # fmt: skip
    sc, psc = c.get("securityContext", {}), pod_spec.get("securityContext", {})
    checks = {
        "runAsNonRoot not set": sc.get("runAsNonRoot") is True or psc.get("runAsNonRoot") is True,
        "root filesystem not read-only": sc.get("readOnlyRootFilesystem") is True,
        "privilege escalation not disabled": sc.get("allowPrivilegeEscalation") is False,
        "capabilities not all dropped": "ALL" in sc.get("capabilities", {}).get("drop", []),
        "service-account token mounted": pod_spec.get("automountServiceAccountToken") is False,
        "no RuntimeDefault seccomp profile": psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
    }
    return out + [f"{c['name']}: {what}" for what, ok in checks.items() if not ok]


def credentials_from(c: dict, secret: str) -> bool:
    """COUCHBASE_USER and COUCHBASE_PASSWORD both from this Secret, required."""
    refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in c.get("env", [])}
    return all(
        refs.get(var, {}).get("name") == secret and refs[var].get("optional") is not True
        for var in ("COUCHBASE_USER", "COUCHBASE_PASSWORD")
    )


COUCHBASE_PORTS = {11210, 11207, 8093, 18093}  # key-value and query, plain and TLS
MANAGEMENT_PORTS = {8091, 18091}
DNS = {(53, "UDP"), (53, "TCP")}


def egress_ports(policy: dict) -> set[tuple[int, str]]:
    """(port, protocol) of every egress rule; a rule without ports (any port) as (0, "any")."""
    found = set()
    for rule in policy["spec"].get("egress", []):
        found |= {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])} or {(0, "any")}
    return found


def policy_problems(policy: dict, pod_labels: dict, ports: set[int]) -> list[str]:
    """A NetworkPolicy that selects these pods, controls both directions, and lets out only DNS and
    these Couchbase ports."""
    out = []
    spec = policy.get("spec", {})
    if not spec.get("podSelector", {}).get("matchLabels", {}).items() <= pod_labels.items():
        out.append("NetworkPolicy selects other pods")
    if set(spec.get("policyTypes", [])) != {"Ingress", "Egress"}:
        out.append("NetworkPolicy does not control ingress and egress")
    if egress_ports(policy) != DNS | {(p, "TCP") for p in ports}:
        out.append(f"NetworkPolicy egress {sorted(egress_ports(policy))}: not DNS and {sorted(ports)} only")
    return out


def problems(docs: dict) -> list[str]:
    """What the deployment contract requires and these manifests lack."""
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
        "NetworkPolicy",
    ):
        need(kind in docs, f"no {kind}")
    if out:
        return out
    dep, pod = docs["Deployment"], docs["Deployment"]["spec"]["template"]
    spec, c = pod["spec"], container(docs)
    labels = pod["metadata"].get("labels", {})
    config = docs["ConfigMap"].get("data", {})
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}

    def setting(env: str) -> float:
        return float(config.get(env, default(env)))

    def probe(name, path):
        get = c.get(name, {}).get("httpGet", {})
        need(get.get("path") == path, f"{name} not on {path}")
        need(get.get("port") in ("http", PORT) and ports.get("http") == PORT, f"{name} not on port {PORT}")

    # The HPA owns the count: a `replicas` would be re-applied by every apply, undoing its scale-out.
    need("replicas" not in dep["spec"], "replicas set on the Deployment the HPA scales")
    need(setting("SERVICE_PORT") == PORT, f"the service does not listen on {PORT}")
    metrics_port = config.get("METRICS_PORT")
    need(metrics_port is not None and int(metrics_port) != PORT, "no METRICS_PORT apart from the service's")
    need(ports.get("metrics") == int(metrics_port or -1), "the container's metrics port is not METRICS_PORT")
    probe("readinessProbe", "/readyz")
    probe("livenessProbe", "/healthz")
    out += container_problems(c, spec)
    # The kubelet's SIGKILL must come after the preStop pause plus the service's own drain.
    grace = spec.get("terminationGracePeriodSeconds")
    drain = setting("SHUTDOWN_GRACE_SECONDS") + prestop_seconds(c)
    need(grace is not None and grace > drain, f"terminationGracePeriodSeconds {grace} not above {drain}")
    # The fleet's figures (k8s/README.md) rest on these: the pod leaves the endpoints before
    # SIGTERM, a rollout never lowers capacity, and an idle connection is closed within the drain.
    need(prestop_seconds(c) > 0, "no preStop pause: SIGTERM would come before the endpoints drop the pod")
    rolling = dep["spec"].get("strategy", {}).get("rollingUpdate", {})
    need(rolling.get("maxUnavailable") in (0, "0%"), "a rollout may take pods away before new ones are ready")
    need(setting("DRAIN_IDLE_SECONDS") < setting("SHUTDOWN_GRACE_SECONDS"), "DRAIN_IDLE_SECONDS not below the drain")
    ann = pod["metadata"].get("annotations", {})
    need(ann.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    need(ann.get("prometheus.io/port") == metrics_port, "prometheus.io/port is not METRICS_PORT")
    need(ann.get("prometheus.io/path") == "/metrics", "no prometheus.io/path annotation")
    # The embedded store's directory is writable despite the read-only root (an emptyDir).
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    need(
        str(Path(config.get("USERPROFILE_DB", default("USERPROFILE_DB"))).parent) in mounts,
        "USERPROFILE_DB directory not mounted",
    )
    # Configuration from the ConfigMap, the credentials from the Secret and from nowhere else.
    need(
        {"configMapRef": {"name": docs["ConfigMap"]["metadata"]["name"]}} in c.get("envFrom", []),
        "ConfigMap not in envFrom",
    )
    need(credentials_from(c, docs["Secret"]["metadata"]["name"]), "COUCHBASE_USER and _PASSWORD not from the Secret")
    need(not {"COUCHBASE_USER", "COUCHBASE_PASSWORD"} & set(config), "credentials in the ConfigMap")
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

    # Ingress to the service port from anywhere, to the metrics port from one namespace; egress to
    # DNS and Couchbase's key-value and query ports only.
    policy = docs["NetworkPolicy"]
    out += policy_problems(policy, labels, COUCHBASE_PORTS)
    ingress = {r["ports"][0]["port"]: r for r in policy["spec"].get("ingress", []) if len(r.get("ports", [])) == 1}
    need(len(ingress) == len(policy["spec"].get("ingress", [])) == 2, "NetworkPolicy ingress: not one rule a port")
    need("http" in ingress and not ingress["http"].get("from"), "NetworkPolicy: the service port not open to all")
    sources = ingress.get("metrics", {}).get("from", [])
    need(
        len(sources) == 1
        and set(sources[0]) == {"namespaceSelector"}
        and sources[0]["namespaceSelector"].get("matchLabels"),
        "NetworkPolicy: the metrics port not limited to a labelled namespace",
    )

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
    "ephemeral-storage request": (*C, "resources", "requests", "ephemeral-storage"),
    "ephemeral-storage limit": (*C, "resources", "limits", "ephemeral-storage"),
    "seccomp profile": (*POD, "securityContext", "seccompProfile"),
    "NetworkPolicy": ("NetworkPolicy",),
    "NetworkPolicy egress": ("NetworkPolicy", "spec", "egress"),
    "NetworkPolicy ingress": ("NetworkPolicy", "spec", "ingress"),
    "NetworkPolicy types": ("NetworkPolicy", "spec", "policyTypes"),
    "runAsNonRoot (container)": (*C, "securityContext", "runAsNonRoot"),
    "readOnlyRootFilesystem": (*C, "securityContext", "readOnlyRootFilesystem"),
    "allowPrivilegeEscalation": (*C, "securityContext", "allowPrivilegeEscalation"),
    "drop ALL": (*C, "securityContext", "capabilities", "drop"),
    "automountServiceAccountToken": (*POD, "automountServiceAccountToken"),
    "terminationGracePeriodSeconds": (*POD, "terminationGracePeriodSeconds"),
    "preStop": (*C, "lifecycle"),
    "maxUnavailable 0": ("Deployment", "spec", "strategy", "rollingUpdate", "maxUnavailable"),
    "scrape annotation": (*ANN, "prometheus.io/scrape"),
    "scrape port annotation": (*ANN, "prometheus.io/port"),
    "scrape path annotation": (*ANN, "prometheus.io/path"),
    "data volume": (*C, "volumeMounts"),
    "credentials from Secret": (*C, "env"),
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


COMPONENTS = K8S / "components"


def test_adding_replicas_is_caught():
    docs = copy.deepcopy(load_manifests())
    docs["Deployment"]["spec"]["replicas"] = 4
    assert "replicas set on the Deployment the HPA scales" in problems(docs)


@pytest.mark.parametrize(
    "opened",
    [
        [{"ports": [{"port": "metrics", "protocol": "TCP"}]}],  # the metrics from anywhere
        [{"from": [{"namespaceSelector": {}}], "ports": [{"port": "metrics", "protocol": "TCP"}]}],  # every namespace
        [{}],  # everything
    ],
)
def test_opening_the_metrics_port_is_caught(opened):
    docs = copy.deepcopy(load_manifests())
    ingress = docs["NetworkPolicy"]["spec"]["ingress"]
    ingress[:] = [r for r in ingress if r["ports"][0]["port"] != "metrics"] + opened
    assert problems(docs), f"ingress {opened} went unnoticed"


@pytest.mark.parametrize(
    "widened",
    [
        {"ports": [{"port": 8091, "protocol": "TCP"}]},  # management: the loader's, not the service's
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},  # anything, anywhere
    ],
)
def test_widening_the_network_policy_is_caught(widened):
    docs = copy.deepcopy(load_manifests())
    docs["NetworkPolicy"]["spec"]["egress"].append(widened)
    assert problems(docs), f"egress {widened} went unnoticed"


# What k8s/components/otel sets: where the collector is, and the share of traces sampled.
OTEL_COMPONENT = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER_ARG"}


def settings_envs() -> set[str]:
    """Every variable the service reads: settings.py's (its OTEL_* and AUTH_* rows included)."""
    import settings

    return {s.env for s in settings.SETTINGS}


def configmap_values() -> dict[str, dict[str, str]]:
    """The values the base's ConfigMap sets, and those each component or overlay adds by a patch, by folder."""
    found = {"base": load_manifests()["ConfigMap"]["data"]}
    for k in sorted(K8S.rglob("kustomization.yaml")):
        for patch in yaml.safe_load(k.read_text()).get("patches", []):
            if patch.get("target", {}).get("kind") == "ConfigMap" and "patch" in patch:
                ops = yaml.safe_load(patch["patch"])
                values = {op["path"].removeprefix("/data/"): op.get("value") for op in ops if op["op"] != "remove"}
                found.setdefault(str(k.parent.relative_to(K8S)), {}).update(values)
    return found


def test_configmaps_set_only_variables_the_service_reads():
    """A misspelt variable would be silently ignored by the service: every key must be a setting."""
    known = settings_envs()
    for folder, values in configmap_values().items():
        assert sorted(set(values) - known) == [], f"{folder}: no such setting"


def test_configmaps_repeat_no_default():
    """A value equal to the default only hides which values this deployment chose."""
    import settings

    defaults = {s.env: s.default for s in settings.SETTINGS}
    for folder, values in configmap_values().items():
        repeated = {k: v for k, v in values.items() if k in defaults and v == defaults[k]}
        assert repeated == {}, f"{folder} repeats the defaults"


def test_the_seeding_job_has_its_own_credentials_and_the_same_contract():
    seed = load_manifests(COMPONENTS / "seed")
    job = seed["Job"]["spec"]["template"]
    (c,) = job["spec"]["containers"]
    assert container_problems(c, job["spec"]) == []
    assert job["spec"]["restartPolicy"] == "Never" and seed["Job"]["spec"]["backoffLimit"] > 0
    service = load_manifests()
    assert seed["Secret"]["metadata"]["name"] != service["Secret"]["metadata"]["name"]
    assert credentials_from(c, seed["Secret"]["metadata"]["name"])
    assert not seed["Secret"].get("data") and not seed["Secret"].get("stringData"), "a password committed to git"
    assert {"configMapRef": {"name": service["ConfigMap"]["metadata"]["name"]}} in c["envFrom"]
    assert "--if-empty" in c["command"], "a re-run of the Job must leave loaded data alone"
    # Its pods are not the service's: the Service, PDB and the service's policy select none of them.
    labels = job["metadata"]["labels"]
    assert not service["Service"]["spec"]["selector"].items() <= labels.items()
    assert policy_problems(seed["NetworkPolicy"], labels, COUCHBASE_PORTS | MANAGEMENT_PORTS) == []
    assert not seed["NetworkPolicy"]["spec"].get("ingress"), "nothing may connect to the Job"


def test_the_jwt_component_needs_no_secret_and_opens_only_https():
    jwt = load_manifests(COMPONENTS / "jwt")
    assert set(jwt) == {"NetworkPolicy"}, "the provider's keys are public: no Secret"
    assert egress_ports(jwt["NetworkPolicy"]) == {(443, "TCP")}
    assert {"AUTH_MODE", "AUTH_ISSUER", "AUTH_AUDIENCE"} <= set(configmap_values()["components/jwt"])
    assert set(configmap_values()["components/jwt-ca"]) == {"AUTH_CA_CERT"}


def test_the_otel_component_opens_only_otlp():
    otel = load_manifests(COMPONENTS / "otel")
    assert set(otel) == {"NetworkPolicy"}
    assert egress_ports(otel["NetworkPolicy"]) == {(4317, "TCP"), (4318, "TCP")}
    assert set(configmap_values()["components/otel"]) == OTEL_COMPONENT


def test_no_manifest_names_a_default_credential():
    """Administrator/password are CAVES's; only the emulator's overlay may say them."""
    for path in sorted(K8S.rglob("*.yaml")):
        if path.parent.name == "caves":
            continue
        code = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
        assert not re.search(r"\b(Administrator|password)\b", code), f"{path.relative_to(ROOT)} names a credential"


def test_the_docs_apply_declaratively():
    """No imperative patch or relaxed loader in the docs or the tools: a GitOps tool applies what
    kustomize builds, and `kubectl scale` would be undone by the HPA."""
    texts = {p: p.read_text() for p in [ROOT / "README.md", K8S / "README.md", *K8S.rglob("*.yaml")]}
    texts |= {p: p.read_text() for p in (ROOT / "tools" / "k8s").glob("*.py")}
    for path, text in texts.items():
        assert "kubectl patch" not in text and "load-restrictor" not in text, path
        if path.suffix != ".py":  # tools/k8s/e2e.py scales by hand, with the HPA removed, as its scenarios
            assert "--replicas" not in text, path


def test_every_readme_section_the_manifests_name_exists():
    """A comment's "k8s/README.md, "Deploy"" leads somewhere: that README has the heading."""
    for path in sorted(K8S.rglob("*.yaml")):
        for readme, section in re.findall(r'((?:k8s/)?README\.md), "([^"]+)"', path.read_text()):
            headings = re.findall(r"^#+ (.+)$", (ROOT / readme).read_text(), re.M)
            assert any(h.startswith(section) for h in headings), f"{path.relative_to(ROOT)}: no {section!r} in {readme}"


def test_the_kubernetes_version_is_declared_once():
    """tools/k8s/VERSION: the install script, the cluster tool and the linter read it; the docs that
    name a Kubernetes version name that one."""
    version = (ROOT / "tools" / "k8s" / "VERSION").read_text().strip()
    assert re.fullmatch(r"v1\.\d+\.\d+", version), version
    for reader in ("tools/install_k8s.sh", "tools/k8s/config.py", "tools/lint.sh"):
        assert "tools/k8s/VERSION" in (ROOT / reader).read_text() or '"k8s" / "VERSION"' in (ROOT / reader).read_text()
    sources = [
        *ROOT.glob("tools/*"),
        *ROOT.glob("tools/*/*"),
        *ROOT.glob("tests/*.py"),
        ROOT / "Makefile",
        *ROOT.glob("*.md"),
        *K8S.rglob("*"),
    ]
    for path in sources:
        if path.is_file() and path.suffix in (".py", ".sh", ".md", ".yaml", "") and path.name != "VERSION":
            lines = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if "kube-score" not in line.lower().replace("_", "-")
            ]
            named = set(re.findall(r"\bv1\.(?:2|3)\d\.\d+\b", "\n".join(lines)))  # kube-score is v1.20 too
            assert named <= {version}, f"{path.relative_to(ROOT)} names Kubernetes {named}"


def test_the_deployment_offers_every_component():
    """k8s/kustomization.yaml lists each component (commented: turned on by uncommenting), and only those."""
    offered = re.findall(r"^  # - components/([\w-]+)", (K8S / "kustomization.yaml").read_text(), re.M)
    assert sorted(offered) == sorted(p.name for p in COMPONENTS.iterdir())
    assert offered.index("seed") < offered.index("couchbase-ca"), "the Job must come before the CA it trusts"
