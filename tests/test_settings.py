"""settings: one table of every setting, the options built from it, and the
documented configuration table (docs/configuration.md), which must be the same table."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import settings
from testkit import ROOT

pytestmark = pytest.mark.inprocess


def test_defaults_come_from_the_table_typed():
    options = settings.defaults()
    for s in settings.SETTINGS:
        value = getattr(options, s.name)
        assert value == (s.type(s.default) if s.default is not None else None), s.env
    assert options.port == 8080 and options.access_log is True and options.couchbase_tls is False


def test_flags_win_over_the_environment_which_wins_over_defaults():
    env = {"SERVICE_PORT": "9001", "WRITE_TIMEOUT_SECONDS": "3.5", "ACCESS_LOG": "off", "COUCHBASE_PASSWORD": "pw"}
    options = settings.load([], env)
    assert (options.port, options.write_timeout, options.access_log, options.couchbase_password) == (
        9001,
        3.5,
        False,
        "pw",
    )
    options = settings.load(["--port", "9002", "--access-log"], env)
    assert (options.port, options.access_log) == (9002, True)


def test_the_password_has_no_flag():
    assert settings.BY_NAME["couchbase_password"].flag is None
    with pytest.raises(SystemExit):
        settings.load(["--couchbase-password", "x"], {})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SERVICE_PORT": "eighty"}, "SERVICE_PORT: invalid int value: 'eighty'"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG: invalid boolean value: 'maybe'"),
        ({"PROFILES_COLLECTION": "user data"}, "PROFILES_COLLECTION: invalid collection_name value: 'user data'"),
        ({"AUTH_COLLECTION": "_system"}, "AUTH_COLLECTION: invalid collection_name value: '_system'"),
        ({"WORKERS": "0"}, "WORKERS must be at least 1"),
        ({"WRITE_TIMEOUT_SECONDS": "0"}, "WRITE_TIMEOUT_SECONDS must be at least 0.01"),
        # A cluster's credentials have no default: a missing (or empty) one stops start-up.
        ({"COUCHBASE_HOST": "db.example.net"}, "COUCHBASE_USER is not set"),
        ({"COUCHBASE_HOST": "db.example.net", "COUCHBASE_USER": "app"}, "COUCHBASE_PASSWORD is not set"),
        (
            {"COUCHBASE_HOST": "db.example.net", "COUCHBASE_USER": "app", "COUCHBASE_PASSWORD": ""},
            "COUCHBASE_PASSWORD is not set",
        ),
        ({"COUCHBASE_HOST": "db.example.net", "COUCHBASE_PASSWORD": "pw"}, "COUCHBASE_USER is not set"),
    ],
)
def test_a_bad_value_is_a_clear_error_naming_the_setting(env, message):
    """Named where it came from: the environment variable, never a flag that was not passed."""
    result = subprocess.run(
        [sys.executable, "-c", "import settings; settings.load()"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_a_bad_flag_is_named_as_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        settings.load(argv, {"SERVICE_PORT": "8080"})
    assert message in capsys.readouterr().err


def test_help_says_which_settings_come_from_the_environment_alone(capsys):
    with pytest.raises(SystemExit):
        settings.load(["--help"], {})
    epilog = " ".join(capsys.readouterr().out.split("From the environment only")[1].split())
    assert [s.env for s in settings.SETTINGS if s.flag is None and s.env in epilog] == [
        s.env for s in settings.SETTINGS if s.flag is None
    ]
    assert "COUCHBASE_PASSWORD" in epilog


def test_the_stores_settings_are_the_loaders_options():
    names = {s.name for s in settings.STORES}
    stores = {s.name for s in settings.SETTINGS if s.env.startswith(("COUCHBASE_", "SQLITE_")) or "COLLECTION" in s.env}
    assert names == stores | {"db"}


def test_the_documented_configuration_table_is_this_table():
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = [line for line in page.splitlines() if line.startswith("|")]
    assert table == settings.markdown().splitlines(), "regenerate it: make settings-table"


def test_options_py_is_generated_from_this_table():
    assert (ROOT / "options.py").read_text() == settings.options_module(), "regenerate it: make settings-table"


def test_the_options_are_frozen():
    with pytest.raises(AttributeError):
        settings.defaults().port = 1  # type: ignore[misc]  # the write the frozen dataclass refuses


def test_nothing_else_reads_the_environment_for_configuration():
    """Every setting is in the table: no module reads a variable of its own."""
    for path in ROOT.glob("*.py"):
        if path.name in ("settings.py", "loaddata.py"):
            continue  # loaddata.py reads SERVICE_PORT only to print a curl line for the service
        assert not re.search(r"environ(\.get|\[)|getenv\(", path.read_text()), path.name


def test_no_credential_has_a_default_and_the_embedded_store_needs_none():
    assert settings.BY_NAME["couchbase_user"].default is None
    assert settings.BY_NAME["couchbase_password"].default is None
    assert settings.defaults({}).couchbase_host is None  # the embedded store: nothing else asked
    options = settings.defaults({"COUCHBASE_HOST": "h", "COUCHBASE_USER": "app", "COUCHBASE_PASSWORD": "x"})
    assert settings.couchbase_credentials(options) == ("app", "x")


def test_the_service_stops_at_start_up_naming_the_missing_credential(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "userprofile_service.py"), "--port", "0"],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "COUCHBASE_HOST": "couchbases://cb.example.cloud.couchbase.com",
            "COUCHBASE_USER": "app",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "userprofile_service.py: error: COUCHBASE_PASSWORD is not set: COUCHBASE_HOST names a cluster, "
        "and its credentials have no default"
    ]


# What the OpenTelemetry SDK reads of the environment while the service exports (otelexport.py):
# every read of os.environ recorded, in a fresh interpreter, through a request's span and the close.
SDK_READS = """
import io, os
read = set()
get = os._Environ.__getitem__
def recording(self, key):
    read.add(key)
    return get(self, key)
os._Environ.__getitem__ = recording
import settings, userprofile_service
from httpparse import read_request
options = settings.defaults({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
traces = userprofile_service.traces_for(options)
request = read_request(io.BytesIO(
    b"GET /api/v1/id/1 HTTP/1.1\\r\\nHost: x\\r\\n"
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\\r\\ntracestate: a=b\\r\\n\\r\\n"
), options)
request_id, trace_id, recorded = traces.begin(request)
traces.end(recorded, "GET", "/api/v1/id", 200)
import cbconn
print(" ".join(sorted(key for key in read if key.startswith("OTEL_"))))
"""


def test_what_the_opentelemetry_sdk_reads_by_itself_is_documented_exactly():
    """The rule above has one exception, the OpenTelemetry SDK, which reads its own variables:
    those the table declares are passed to it explicitly, and docs/tracing.md lists exactly
    the others, so a new SDK that reads one more is caught here."""
    found = subprocess.run(
        [sys.executable, "-c", SDK_READS],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    read = set(found.stdout.split())
    declared = {s.env for s in settings.SETTINGS if s.env.startswith("OTEL_")}
    page = (ROOT / "docs" / "tracing.md").read_text()
    section = page.split("reads these by itself", 1)[1].split("It also reads", 1)[0]
    documented = set(re.findall(r"`(OTEL_\w+)`", section))
    assert read - declared == documented
    # Of the declared ones, the SDK reads only these two itself, to the same effect (docs/tracing.md).
    assert read & declared == {"OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED"}


def test_no_configmap_repeats_a_default():
    """The manifests set what differs from settings.py's defaults, and nothing else: a value
    copied from the table would go stale when the default moves. Read from the ConfigMaps
    and from the components' patches that add to one."""
    import yaml

    defaults = {s.env: s.default for s in settings.SETTINGS}
    values: list[tuple[str, str, str]] = []
    for path in sorted((ROOT / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                values += [(path.name, name, str(value)) for name, value in (doc.get("data") or {}).items()]
            for patch in doc.get("patches", []) if isinstance(doc, dict) else []:
                operations = yaml.safe_load(patch.get("patch", "")) if isinstance(patch, dict) else None
                for op in operations if isinstance(operations, list) else []:
                    if str(op.get("path", "")).startswith("/data/") and "value" in op:
                        values.append((str(path.relative_to(ROOT)), op["path"][6:], str(op["value"])))
    assert {"METRICS_PORT", "AUTH_MODE"} <= {name for _, name, _ in values}  # the walk finds both kinds
    repeated = [(where, name, value) for where, name, value in values if name in defaults and defaults[name] == value]
    assert repeated == []
