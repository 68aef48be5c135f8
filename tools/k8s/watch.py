"""What the e2e run sees of the cluster, once a second: the pods (Ready since when, their address),
each pod's own count of answers (its /metrics), the Deployment's and the HPA's replicas.

Runs inside the cluster's network namespace (pod addresses are reachable only there) and talks to
the API server with the admin's certificate, without a kubectl process per look.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from testkit.jmeter import MIX_ROUTES
from testkit.scrape import samples

from . import config as cfg
from .config import NAMESPACE


def api_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def counts(metrics: str) -> tuple[int, int]:
    """(answers 200, answers of any other status) on the lookup routes JMeter's mix sends, from a pod's /metrics."""
    ok = other = 0
    for name, labels, value in samples(metrics):
        if name == "userprofile_requests_total" and labels.get("route") in MIX_ROUTES.values():
            if labels.get("status") == "200":
                ok += int(value)
            else:
                other += int(value)
    return ok, other


@dataclass
class Pod:
    name: str
    ip: str = ""
    metrics_port: int = 8080  # the container's port named "metrics" (METRICS_PORT), else the service's
    ready_at: float | None = None  # epoch seconds of the Ready condition's last change to True
    deleted: bool = False  # being deleted, or gone from the API
    ready: bool = False  # Ready at the last look
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, ok, other)

    def at(self, t: float) -> tuple[int, int]:
        """The pod's counters as last seen at or before t (0 before the first look)."""
        i = bisect.bisect_right([s[0] for s in self.samples], t)
        return self.samples[i - 1][1:] if i else (0, 0)


class Watch:
    def __init__(self, run: Path, interval: float = 1.0):
        self.ctx = api_context(run / "pki")
        self.base = f"https://{cfg.NODE_IP}:{cfg.API_PORT}"
        self.interval = interval
        self.pods: dict[str, Pod] = {}
        self.replicas: list[tuple[float, int, int, int]] = []  # (time, deployment, ready, HPA desired)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.lock = threading.Lock()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.base + path, context=self.ctx, timeout=5) as r:  # nosec B310  # the cluster's own API server
            return json.load(r)

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(OSError):  # a look the API server or a pod missed: the next one counts
                self.look()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def look(self) -> None:
        items = self.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app.kubernetes.io%2Fname%3Duserprofile-service"
        )["items"]
        present = {item["metadata"]["name"] for item in items}
        for pod in self.pods.values():
            if pod.name not in present:
                pod.deleted, pod.ready = True, False
        for item in items:
            name = item["metadata"]["name"]
            with self.lock:
                pod = self.pods.setdefault(name, Pod(name))
            pod.ip = item["status"].get("podIP", "") or pod.ip
            # /metrics on the container's port named "metrics" (METRICS_PORT), else on the service's.
            named = {
                p.get("name"): p["containerPort"] for ct in item["spec"]["containers"] for p in ct.get("ports", [])
            }
            pod.metrics_port = named.get("metrics", named.get("http", 8080))
            pod.deleted = "deletionTimestamp" in item["metadata"]
            conditions = {c["type"]: c for c in item["status"].get("conditions", [])}
            c = conditions.get("Ready", {})
            pod.ready = c.get("status") == "True"
            if pod.ready and pod.ready_at is None:
                pod.ready_at = datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00")).timestamp()
        for pod in list(self.pods.values()):
            if not pod.ip or pod.name not in present:
                continue  # not started yet, or gone: its last look stands
            try:
                url = f"http://{pod.ip}:{pod.metrics_port}/metrics"
                with urllib.request.urlopen(url, timeout=2) as r:  # nosec B310  # a pod's address
                    ok, other = counts(r.read().decode())
                pod.samples.append((time.time(), ok, other))
            except OSError:
                pass  # not listening yet, or gone: its last look stands
        deploy = self.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/userprofile-service")
        desired = -1
        try:
            hpa = self.get(f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/userprofile-service")
            desired = hpa["status"].get("desiredReplicas", -1)
        except OSError:
            pass
        self.replicas.append(
            (time.time(), deploy["status"].get("replicas", 0), deploy["status"].get("readyReplicas", 0), desired)
        )

    def served(self, start: float, end: float) -> dict[str, tuple[int, int]]:
        """Each pod's answers (200, other) between start and end, by its own counters."""
        out = {}
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            (ok0, other0), (ok1, other1) = pod.at(start), pod.at(end)
            if ok1 - ok0 or other1 - other0:
                out[pod.name] = (ok1 - ok0, other1 - other0)
        return out

    def ready_names(self) -> set[str]:
        return {p.name for p in self.pods.values() if p.ready and not p.deleted}
