"""The container image, built from the Dockerfile and run the way Kubernetes runs it, and the
Deployment's pod spec played by podman.

- The image is built by tools/image.sh (what `make image` runs). When the Dockerfile's base
  image cannot be pulled, a stand-in made of Debian packages takes its name; the build says so
  and this module prints it, with the size, past pytest's output capture.
- Containers run with a read-only root, no capabilities, no-new-privileges, the image's own
  user and a volume at /data, on the host's network: the only network here is loopback, and
  CAVES (the Couchbase emulator, testkit/caves.py) listens there.
- `podman kube play` plays k8s/base/configmap.yaml and k8s/base/deployment.yaml, with the changes a
  single host forces (see play_manifests), against CAVES.

podman is required: when it is missing these tests fail (tools/install_podman.sh installs it).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TOKEN

from testkit import ROOT, free_port, wait_until
from testkit.caves import PASSWORD, USER, Caves

pytestmark = pytest.mark.external

K8S = ROOT / "k8s" / "base"
CONF = ROOT / "tools" / "containers.conf"
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONF))}
COUNT = 300
# The image may be at most this big on the official base. Where that base cannot be pulled,
# the estimate is the layers the Dockerfile adds (measured) plus the official slim base's size:
# not measurable here, so counted with a margin (python:3.11-slim-bookworm was commonly reported
# at about 125 MB uncompressed for amd64; the sizes measured here: k8s/README.md).
MAX_IMAGE_MB = 200
OFFICIAL_SLIM_BASE_MB = 130
STAND_IN_LABEL = "userprofile.base-stand-in"
# Kubernetes' restricted profile as the Deployment asks for it (/tmp is its second emptyDir),
# on the host's network.
HARDENING = [
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
    "--network=host",
]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return result


def shown(capsys, text: str) -> None:
    """Print past pytest's capture: the image's numbers belong in every test run's output."""
    with capsys.disabled():
        print(f"\n{text}", flush=True)


@pytest.fixture(scope="module")
def lock():
    """One module at a time on this host: the image tag, the kube-play pod, its volumes and its
    podman secret are host-wide names, and several checkouts may run their tests at once."""
    with open(Path(tempfile.gettempdir()) / "userprofile-image-test.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="module")
def image(lock) -> dict:
    """The image built from the Dockerfile now, and what the build said."""
    assert subprocess.run(["podman", "--version"], capture_output=True).returncode == 0, (
        "podman is not installed: run tools/install_podman.sh (make test does)"
    )
    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(ROOT / "tools" / "image.sh")], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900
    )
    assert build.returncode == 0, build.stdout + build.stderr
    built = re.search(r"built (\S+) with", build.stdout)
    assert built, build.stdout
    tag = built.group(1)
    from_line = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert from_line, "no FROM in the Dockerfile"
    base = from_line.group(1)
    info = json.loads(podman("image", "inspect", tag).stdout)[0]
    base_info = json.loads(podman("image", "inspect", base).stdout)[0]
    return {
        "tag": tag,
        "log": build.stdout.strip(),
        "seconds": time.monotonic() - started,
        "info": info,
        "base": base_info,
        "stand_in": STAND_IN_LABEL in (base_info["Config"].get("Labels") or {}),
    }


def dockerfile_layers(image: dict, tmp_path: Path, tag: str | None = None) -> list[tuple[str, list[str]]]:
    """(digest, member names) of each layer the Dockerfile added, in order."""
    archive = tmp_path / "image.tar"
    podman("save", "--format", "docker-archive", "-o", str(archive), tag or image["tag"], timeout=300)
    n_base = len(image["base"]["RootFS"]["Layers"])
    layers = []
    with tarfile.open(archive) as outer:
        listing = outer.extractfile("manifest.json")
        assert listing is not None, "no manifest.json file in the archive"
        (manifest,) = json.load(listing)
        for name in manifest["Layers"][n_base:]:
            with tarfile.open(fileobj=outer.extractfile(name)) as layer:
                layers.append((name, layer.getnames()))
    archive.unlink()
    return layers


def layer_index(layers, pattern: str) -> int:
    found = [i for i, (_, names) in enumerate(layers) if any(re.search(pattern, n) for n in names)]
    assert len(found) == 1, f"{pattern}: in layers {found}, expected exactly one"
    return found[0]


# -- image hygiene ---------------------------------------------------------------------
def test_image_is_small_and_holds_no_build_tools(image, capsys):
    size_mb = image["info"]["Size"] / 1e6
    added_mb = size_mb - image["base"]["Size"] / 1e6
    if image["stand_in"]:
        estimate = added_mb + OFFICIAL_SLIM_BASE_MB
        note = (
            f"built on the STAND-IN base (the official image cannot be pulled here): "
            f"{size_mb:.1f} MB here; the Dockerfile adds {added_mb:.1f} MB, so about "
            f"{estimate:.0f} MB on the official slim base ({OFFICIAL_SLIM_BASE_MB} MB)"
        )
    else:
        estimate = size_mb
        note = f"on the official base: {size_mb:.1f} MB, of which the Dockerfile adds {added_mb:.1f} MB"
    shown(capsys, f"{image['log']}\nimage size: {note}; build and inspect took {image['seconds']:.1f} s")
    assert estimate <= MAX_IMAGE_MB, note
    # No compiler, linker or make: the SDK comes as a wheel, nothing is built in the image.
    found = podman(
        "run",
        "--rm",
        "--network=none",
        image["tag"],
        "sh",
        "-c",
        "for c in gcc cc c++ g++ clang make ld as cpp; do command -v $c; done; true",
    ).stdout
    assert found == "", f"build tools in the image: {found.split()}"
    # pip kept no cache and the code was compiled at build time (the root is read-only at run time).
    check = (
        "import pathlib, sys; "
        "sys.exit(any(pathlib.Path(p).exists() for p in ('/root/.cache/pip', '/home/app/.cache')) "
        "or not list(pathlib.Path('/app/__pycache__').glob('userprofile_service.*.pyc')))"
    )
    assert (
        podman(
            "run", "--rm", "--network=none", "--user", "0", image["tag"], "python3", "-c", check, check=False
        ).returncode
        == 0
    ), "a pip cache in the image, or the code not byte-compiled"


def test_the_image_carries_the_projects_version(image):
    """pyproject.toml's version: the tag, the OCI labels, and what the service in it reports."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image["tag"] == f"userprofile-service:{version}"
    labels = image["info"]["Config"].get("Labels") or {}
    assert labels.get("org.opencontainers.image.version") == version, labels
    assert labels.get("org.opencontainers.image.licenses") == "MIT", labels
    assert labels.get("org.opencontainers.image.title") == "userprofile-service", labels
    out = podman("run", "--rm", *HARDENING, image["tag"], "python3", "userprofile_service.py", "--version").stdout
    assert out.startswith(f"userprofile-service {version} (Python 3.13."), out


def test_dependencies_have_their_own_layer_and_no_ca_bundle_is_baked_in(image, tmp_path):
    layers = dockerfile_layers(image, tmp_path)
    deps = layer_index(layers, r"-packages/couchbase/__init__\.py$")
    code = layer_index(layers, r"^app/userprofile_service\.py$")
    assert deps < code, "the dependencies must be installed before the code is copied"
    assert not any(n.startswith("app/") and n.endswith(".py") for n in layers[deps][1]), "code in the dependency layer"
    assert not any("-packages/" in n for n in layers[code][1]), "dependencies in the code layer"
    # The build mounts the host's CA bundle for pip; no layer of ours may carry it, or any
    # pip configuration, or an empty mount point left behind.
    for _, names in layers:
        leaked = [n for n in names if re.search(r"(^etc/ssl/|cacert\.pem$|pip\.conf$|\.crt$)", n)]
        assert leaked == [], f"certificates or pip configuration in a layer: {leaked}"


def test_a_code_change_reuses_the_dependency_layer_and_new_modules_are_copied(image, tmp_path):
    """Rebuilt offline from a context with one more module: the dependency layer must come from
    the cache (pip cannot reach the network) and the module must be in the image."""
    context = tmp_path / "context"
    context.mkdir()
    for p in [
        ROOT / "Dockerfile",
        ROOT / ".dockerignore",
        ROOT / "requirements.txt",
        ROOT / "requirements-tracing.txt",
        ROOT / "openapi.json",
        ROOT / "pyproject.toml",
        *ROOT.glob("*.py"),
    ]:
        (context / p.name).write_bytes(p.read_bytes())
    (context / "zz_new_module.py").write_text("VALUE = 1\n")
    tag = f"userprofile-service:test-{uuid.uuid4().hex[:8]}"
    try:
        build = podman(
            "build", "--format", "docker", "--network", "none", "--tag", tag, str(context), check=False, timeout=300
        )
        assert build.returncode == 0, f"a code-only change re-ran the dependency step: {build.stderr[-1500:]}"
        layers = dockerfile_layers(image, tmp_path, tag)
        original = dockerfile_layers(image, tmp_path)
        deps = layer_index(layers, r"-packages/couchbase/__init__\.py$")
        assert layers[deps][0] == original[layer_index(original, r"-packages/couchbase/__init__\.py$")][0]
        assert "app/zz_new_module.py" in layers[layer_index(layers, r"^app/userprofile_service\.py$")][1]
    finally:
        podman("rmi", "--force", tag, check=False)


# -- running it --------------------------------------------------------------------------
class Container:
    """A detached container of the image, run as Kubernetes would with a volume at /data."""

    def __init__(self, image: dict, env: dict):
        self.name = f"userprofile-test-{uuid.uuid4().hex[:8]}"
        self.volume = f"{self.name}-data"
        self.port = free_port()
        self.image = image
        self.env = {
            "SERVICE_HOST": "127.0.0.1",
            "SERVICE_PORT": str(self.port),
            "ACCESS_LOG": "true",
            "TOKEN_REFRESH_SECONDS": "0.5",
            **env,
        }

    def __enter__(self) -> Container:
        env = [f"--env={k}={v}" for k, v in self.env.items()]
        # No --user: the image's own.
        podman(
            "run",
            "--detach",
            "--name",
            self.name,
            *HARDENING,
            "--volume",
            f"{self.volume}:/data",
            *env,
            self.image["tag"],
        )
        assert wait_until(lambda: self.answers("/healthz"), 30), f"never answered /healthz: {self.logs()}"
        return self

    def __exit__(self, *exc) -> None:
        podman("rm", "--force", "--time", "0", self.name, check=False)
        podman("volume", "rm", "--force", self.volume, check=False)

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *args, check=check, timeout=300)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def get(self, path: str, token: str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def answers(self, path: str, token: str | None = None) -> bool:
        try:
            return self.get(path, token)[0] == 200
        except OSError:
            return False


def process_status(c: Container) -> dict:
    """The service's own view of its privileges, from /proc/1/status inside the container."""
    lines = c.exec("cat", "/proc/1/status").stdout.splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines)}


def assert_restricted(c: Container, uid: str) -> None:
    status = process_status(c)
    assert status["Uid"] == [uid] * 4 and status["Gid"] == [uid] * 4, status["Uid"]
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps][0], 16) == 0, f"{caps} {status[caps]}"
    assert status["NoNewPrivs"] == ["1"]
    root = c.exec("touch", "/app/written", check=False)
    assert root.returncode != 0 and "Read-only file system" in root.stderr
    c.exec("touch", "/data/written", "/tmp/written")


def check_logs(log: str) -> None:
    assert "Traceback" not in log
    assert TOKEN not in log, "the token is in the container's log"
    assert "password" not in log, "CAVES's password, or the word, is in the container's log"


def test_serves_from_a_read_only_root_as_its_own_user_and_drains_on_sigterm(image):
    with Container(image, {"SHUTDOWN_GRACE_SECONDS": "10"}) as c:
        image_uid = image["info"]["Config"]["User"].split(":")[0]
        assert image_uid.isdigit() and image_uid != "0"
        assert_restricted(c, image_uid)
        assert "store: embedded SQLite at /data/" in c.logs()
        loaded = c.exec("python3", "loaddata.py", "--count", str(COUNT), "--token", TOKEN)
        assert f"loaded {COUNT} profiles" in loaded.stdout
        assert wait_until(lambda: c.answers("/readyz") and c.answers("/api/v1/id/9", TOKEN), 15), c.logs()
        status, body = c.get("/api/v1/id/9", TOKEN)
        assert status == 200 and b'"record_id":9,' in body
        # The image's HEALTHCHECK, run as the engine's timer would run it.
        health = podman("healthcheck", "run", c.name, check=False)
        assert health.returncode == 0, f"HEALTHCHECK failed: {health.stdout} {health.stderr}"
        state = json.loads(podman("inspect", c.name).stdout)[0]["State"]
        assert (state.get("Health") or state.get("Healthcheck"))["Status"] == "healthy"
        sigterm_under_load(c, grace=float(c.env["SHUTDOWN_GRACE_SECONDS"]))
        check_logs(c.logs())


def sigterm_under_load(c: Container, grace: float) -> None:
    """SIGTERM while clients keep requesting and three requests are half-sent: those three are
    answered in full, no response is cut short, and the process exits 0 within the grace."""
    stop = threading.Event()
    results: dict[str, Any] = {"ok": 0, "refused": 0, "bad": []}
    lock = threading.Lock()

    def client(n: int):
        conn = None
        while not stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
                conn.request("GET", f"/api/v1/id/{n % COUNT + 1}", headers={"Authorization": f"Bearer {TOKEN}"})
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    if resp.status == 200 and body.startswith(b"["):
                        results["ok"] += 1
                    else:
                        results["bad"].append(f"{resp.status} {body[:80]!r}")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (ConnectionRefusedError, http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # Not accepted, or closed while idle: never started, the client's to retry.
                with lock:
                    results["refused"] += 1
                conn = None
                time.sleep(0.05)
            except (http.client.IncompleteRead, http.client.HTTPException, OSError) as exc:
                with lock:
                    results["bad"].append(repr(exc))
                conn = None
            n += 1

    threads = [threading.Thread(target=client, args=(i * 50,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    half_sent = []
    for rid in (3, 5, 7):
        s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
        s.sendall(f"GET /api/v1/id/{rid} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n".encode())
        half_sent.append((rid, s))
    assert wait_until(lambda: results["ok"] >= 200, 20), f"no load going: {results}"
    served_before = results["ok"]
    podman("kill", "--signal", "TERM", c.name)
    signalled = time.monotonic()
    time.sleep(0.5)
    for rid, s in half_sent:
        s.sendall(b"\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        s.close()
        assert answer.startswith(b"HTTP/1.1 200 OK") and f'"record_id":{rid},'.encode() in answer, answer[:200]
    code = podman("wait", c.name, timeout=grace + 30).stdout.strip()
    exited_after = time.monotonic() - signalled
    stop.set()
    for t in threads:
        t.join(15)
    assert code == "0", f"exit code {code}: {c.logs()[-2000:]}"
    assert exited_after < grace, f"exited {exited_after:.1f} s after SIGTERM, grace {grace} s"
    assert results["bad"] == [], results["bad"][:5]
    assert results["ok"] > served_before


@pytest.fixture()
def cluster(tmp_path):
    caves = Caves(log_path=tmp_path / "caves.log").start()
    caves.add_bucket()
    yield caves
    caves.stop()


def test_serves_from_caves_from_inside_the_container(image, cluster):
    env = cluster.env(COUCHBASE_KV_TIMEOUT="1", COUCHBASE_CONNECT_TIMEOUT="3")
    with Container(image, env) as c:
        assert f"store: Couchbase at {cluster.connstr}" in c.logs()
        loaded = c.exec("python3", "loaddata.py", "--count", str(COUNT), "--token", TOKEN)
        assert f"loaded {COUNT} profiles" in loaded.stdout
        assert wait_until(lambda: c.answers("/readyz") and c.answers("/api/v1/id/9", TOKEN), 20), c.logs()
        status, body = c.get("/api/v1/id/9", TOKEN)
        assert status == 200 and b'"record_id":9,' in body
        status, body = c.get(f"/api/v1/id/{COUNT + 1}", TOKEN)
        assert status == 404
        podman("stop", "--time", "25", c.name)
        assert podman("inspect", "--format", "{{.State.ExitCode}}", c.name).stdout.strip() == "0"
        check_logs(c.logs())


# -- the Deployment's pod spec ----------------------------------------------------------------
def play_manifests(connstr: str, port: int) -> tuple[dict, dict]:
    """The ConfigMap and the Deployment as the repository has them, except what one host needs:
    - ConfigMap: COUCHBASE_HOST is CAVES, SERVICE_HOST/PORT and METRICS_PORT free loopback ports
      (the pod shares the host's network), and the token re-read every half second;
    - Deployment: one replica (every pod would bind the same host port), hostNetwork (CAVES
      is on loopback), and no `ports:` list, which podman 4.3 publishes on the host, and
      publishing cannot be combined with the host's network.
    Everything else, security contexts, envFrom, the Secret reference, probes, volumes, is played
    as written."""
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())
    config["data"].update(
        {
            "COUCHBASE_HOST": connstr,
            "COUCHBASE_USER": USER,
            "SERVICE_HOST": "127.0.0.1",
            "SERVICE_PORT": str(port),
            "METRICS_PORT": str(free_port()),
            "TOKEN_REFRESH_SECONDS": "0.5",
        }
    )
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"] = True
    del pod["containers"][0]["ports"]
    return config, deployment


def test_the_deployment_pod_spec_runs_in_podman(image, cluster, tmp_path):
    config, deployment = play_manifests(cluster.connstr, free_port())
    pod_spec = deployment["spec"]["template"]["spec"]
    (spec,) = pod_spec["containers"]
    assert spec["image"] == image["tag"], "the Deployment runs another image than tools/image.sh builds"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in spec["env"]}
    assert set(refs) == {"COUCHBASE_USER", "COUCHBASE_PASSWORD"}, "the credentials come from the Secret"
    (secret_name,) = {ref["name"] for ref in refs.values()}
    # The Secret's data is created out of git (secret.yaml holds none), as `kubectl create secret`
    # would: CAVES's credentials. Given to podman as JSON, which is what its secretKeyRef reads.
    password = PASSWORD
    credentials = {refs["COUCHBASE_USER"]["key"]: USER, refs["COUCHBASE_PASSWORD"]["key"]: password}
    secret = json.dumps({key: base64.b64encode(value.encode()).decode() for key, value in credentials.items()})
    played = tmp_path / "play.yaml"
    played.write_text(yaml.safe_dump_all([config, deployment]))
    podman("secret", "rm", secret_name, check=False)
    created = subprocess.run(
        ["podman", "secret", "create", secret_name, "-"],
        input=secret,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    try:
        out = podman("kube", "play", "--replace", str(played), timeout=180).stdout
        # It prints "Pod:", the pod's id, "Container:", then the containers' ids.
        containers = out.split("Container:")[-1].split() if "Container:" in out else []
        assert len(containers) == 1, f"kube play did not start one container: {out}"
        check_the_pod(image, containers[0], config, spec, pod_spec, password)
    finally:
        podman("kube", "down", str(played), check=False)
        podman("secret", "rm", secret_name, check=False)


def quantity(text: str) -> float:
    """A Kubernetes quantity as a number: 256Mi, 500m, 1."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def check_the_pod(image: dict, name: str, config: dict, spec: dict, pod_spec: dict, password: str) -> None:
    assert name, "kube play started no container"
    c = Container(image, {})
    c.name, c.port = name, int(config["data"]["SERVICE_PORT"])
    assert wait_until(lambda: c.answers("/healthz"), 30), c.logs()
    assert f"store: Couchbase at {config['data']['COUCHBASE_HOST']}" in c.logs()
    # securityContext: the pod's user and group, nothing privileged, a read-only root, and the
    # two emptyDir volumes writable.
    assert_restricted(c, str(pod_spec["securityContext"]["runAsUser"]))
    assert process_status(c)["Seccomp"] == ["2"], "no seccomp filter (RuntimeDefault)"
    mounts = {v["mountPath"] for v in spec["volumeMounts"]}
    assert mounts == {"/data", "/tmp"}
    # env from both: every ConfigMap key as written, and the user and password from the Secret
    # (the password compared by digest, so it never appears in the output).
    probe = (
        "import hashlib, json, os, sys; env = {k: os.environ.get(k) for k in sys.argv[1:]}; "
        "env['user'] = os.environ.get('COUCHBASE_USER'); "
        "env['pw'] = hashlib.sha256(os.environ.get('COUCHBASE_PASSWORD', '').encode()).hexdigest(); "
        "print(json.dumps(env))"
    )
    seen = json.loads(c.exec("python3", "-c", probe, *config["data"]).stdout)
    assert seen.pop("pw") == hashlib.sha256(password.encode()).hexdigest(), "COUCHBASE_PASSWORD is not the Secret's"
    assert seen.pop("user") == USER, "COUCHBASE_USER is not the Secret's"
    assert seen == config["data"]
    # resources: the memory and CPU limits in the container's cgroup (v1 or v2 files).
    limits = spec["resources"]["limits"]
    read = (
        "import pathlib; r = lambda *ps: next(pathlib.Path(p).read_text().split() for p in ps "
        "if pathlib.Path(p).exists()); "
        "m = r('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'); "
        "c = r('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us'); "
        "p = r('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_period_us'); "
        "print(m[0], c[0], p[-1])"
    )
    memory, quota, period = c.exec("python3", "-c", read).stdout.split()
    assert int(memory) == quantity(limits["memory"]), f"memory limit {memory}"
    assert int(quota) / int(period) == quantity(limits["cpu"]), f"cpu quota {quota}/{period}"
    # Load through the pod's own environment, then the probes as the kubelet sends them.
    loaded = c.exec("python3", "loaddata.py", "--count", str(COUNT), "--token", TOKEN)
    assert f"loaded {COUNT} profiles" in loaded.stdout
    for probe_name in ("readinessProbe", "livenessProbe"):
        path = spec[probe_name]["httpGet"]["path"]
        assert wait_until(functools.partial(c.answers, path), 20), f"{probe_name} {path}: {c.logs()[-2000:]}"
    assert wait_until(lambda: c.answers("/api/v1/id/9", TOKEN), 10)
    # /metrics on METRICS_PORT alone, as the NetworkPolicy and the ServiceMonitor expect it.
    assert not c.answers("/metrics")
    metrics_port = int(config["data"]["METRICS_PORT"])
    with socket.create_connection(("127.0.0.1", metrics_port), timeout=10) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n")
        scraped = b"".join(iter(lambda: s.recv(65536), b""))
    assert scraped.startswith(b"HTTP/1.1 200") and b"userprofile_build_info{" in scraped, scraped[:300]
    # Stopped as the kubelet stops it: SIGTERM, and the grace period before SIGKILL.
    pod = json.loads(podman("inspect", name).stdout)[0]["Pod"]
    podman("pod", "stop", "--time", str(pod_spec["terminationGracePeriodSeconds"]), pod, timeout=120)
    assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0", c.logs()[-2000:]
    check_logs(c.logs())
