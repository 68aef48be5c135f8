"""The OpenTelemetry Collector the trace tests and benchmarks export to: built on first use
(tools/install_otelcol.sh), receiving OTLP/HTTP on a free loopback port, writing every span it
receives to a file (its file exporter, OTLP JSON), which ``spans()`` reads back."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from testkit import ROOT, end, free_port, wait_until

INSTALL = ROOT / "tools" / "install_otelcol.sh"


def collector_binary() -> Path:
    """The collector, built from the Go module proxy on first use (a few minutes), then reused;
    a failed build fails the test that needs it, saying why (never a skip)."""
    out = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"tools/install_otelcol.sh failed ({out.returncode}): {out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def attributes(items: list[dict]) -> dict[str, Any]:
    """OTLP JSON's key/value list as a dict of plain values."""
    found: dict[str, Any] = {}
    for item in items:
        value = item.get("value", {})
        if "arrayValue" in value:
            found[item["key"]] = [next(iter(v.values())) for v in value["arrayValue"].get("values", [])]
        else:
            found[item["key"]] = next(iter(value.values()), None)
    return found


class Collector:
    """``otelcol`` with the OTLP receiver (HTTP) and the file exporter; a context manager."""

    def __init__(self, work: Path, output: Path | None = None):
        self.work = work
        self.port = free_port()
        self.output = output or work / "spans.jsonl"  # os.devnull for a benchmark: spans received, not kept
        self.log_path = work / "otelcol.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        """OTEL_EXPORTER_OTLP_ENDPOINT's value for it (the base URL: /v1/traces is appended)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Collector:
        config = self.work / "otelcol.yaml"
        config.write_text(
            "receivers:\n"
            "  otlp:\n"
            "    protocols:\n"
            f"      http:\n        endpoint: 127.0.0.1:{self.port}\n"
            "exporters:\n"
            f"  file:\n    path: {self.output}\n    flush_interval: 100ms\n"
            "service:\n"
            # No metrics of its own: they would listen on a fixed port (8888).
            "  telemetry:\n    metrics:\n      level: none\n"
            "  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n"
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(collector_binary()), f"--config={config}"], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_until(self._listening, timeout, 0.05):
            self.stop()
            raise RuntimeError(f"the collector did not listen in {timeout}s: {self.log_path.read_text()[-3000:]}")
        return self

    def _listening(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the collector exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", self.port), 1).close()
            return True
        except OSError:
            return False

    def spans(self) -> list[dict]:
        """Every span received so far, flattened: its fields (ids as hex) and ``attributes``,
        ``resource`` and ``scope`` (the instrumentation scope's name)."""
        if not self.output.exists():
            return []
        found = []
        for line in self.output.read_text().splitlines():
            if not line.strip():
                continue
            for resource_spans in json.loads(line).get("resourceSpans", []):
                resource = attributes(resource_spans.get("resource", {}).get("attributes", []))
                for scope_spans in resource_spans.get("scopeSpans", []):
                    scope = scope_spans.get("scope", {}).get("name", "")
                    for span in scope_spans.get("spans", []):
                        found.append(
                            {
                                **span,
                                "attributes": attributes(span.get("attributes", [])),
                                "resource": resource,
                                "scope": scope,
                            }
                        )
        return found

    def wait_for_spans(self, count: int, timeout: float = 20) -> list[dict]:
        """At least ``count`` spans, or what has arrived when ``timeout`` passes."""
        wait_until(lambda: len(self.spans()) >= count, timeout, 0.1)
        return self.spans()

    def stop(self) -> None:
        if self.proc is not None:
            end(self.proc, 10)
        self.proc = None

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
