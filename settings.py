"""Every setting of the service and its stores, in one table.

Each is an environment variable, and most have a command-line flag that wins
over it. ``load()`` builds the options from this table: an ``options.Options``,
typed and frozen, whose class is generated from the table too. Nothing else reads
the environment for configuration. The documented table (docs/configuration.md) and options.py
are checked against this one (tests/test_settings.py); `make settings-table` writes both.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from options import Options


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


@dataclass(frozen=True)
class Setting:
    name: str  # the attribute of the loaded options
    env: str
    flag: str | None  # None: from the environment only (a password has no place in a process listing)
    default: str | None  # as it would be written in the environment; None: unset
    type: Callable[[str], Any]  # str, int, float or boolean
    meaning: str
    minimum: float | None = None


S = Setting
# A table: one setting a row reads better than the formatter's one value a line.
# fmt: off
SETTINGS = (
    # -- the server ------------------------------------------------------------------------------
    S("host", "SERVICE_HOST", "--host", "0.0.0.0", str, "listen address"),  # nosec B104  # a container behind a load balancer
    S("port", "SERVICE_PORT", "--port", "8080", int, "listen port", 0),
    S("workers", "WORKERS", "--workers", "1", int,
      "processes sharing the port (`SO_REUSEPORT`)", 1),
    S("token_refresh", "TOKEN_REFRESH_SECONDS", "--token-refresh", "60", float,
      "seconds between re-reads of the token (rotation without restart)", 0.1),
    S("access_log", "ACCESS_LOG", "--access-log", "true", boolean, "one line per request on stdout"),
    S("max_connections", "MAX_CONNECTIONS", "--max-connections", "4096", int,
      "open connections beyond which a new one gets 503", 1),
    S("backlog", "LISTEN_BACKLOG", "--backlog", "4096", int, "listen queue (capped by `net.core.somaxconn`)", 1),
    # -- deadlines: every phase of a connection has one ----------------------------------------
    S("idle_timeout", "IDLE_TIMEOUT_SECONDS", "--idle-timeout", "75", float,
      "an idle connection is closed after this (`Keep-Alive` says a second less)", 0.01),
    S("header_timeout", "HEADER_TIMEOUT_SECONDS", "--header-timeout", "10", float,
      "from a request's first byte to the end of its headers and body; then 408", 0.01),
    S("write_timeout", "WRITE_TIMEOUT_SECONDS", "--write-timeout", "30", float,
      "time a client has to take an answer (then the connection is closed)", 0.01),
    S("shutdown_grace", "SHUTDOWN_GRACE_SECONDS", "--shutdown-grace", "20", float,
      "on SIGTERM, time connections get to finish", 0),
    S("drain_idle", "DRAIN_IDLE_SECONDS", "--drain-idle", "6", float,
      "on SIGTERM, a connection idle this long is closed", 0),
    # -- connection recycling: scale-out reaches new instances through an L4 balancer ----------
    S("max_requests_per_connection", "MAX_REQUESTS_PER_CONNECTION", "--max-requests-per-connection", "10000",
      int, "answers on one connection, the last with `Connection: close` (0: no limit)", 0),
    S("max_connection_age", "MAX_CONNECTION_AGE_SECONDS", "--max-connection-age", "30", float,
      "age (less up to 10%) after which a connection's next answer closes it (0: none)", 0),
    S("watchdog_interval", "WATCHDOG_INTERVAL_SECONDS", "--watchdog-interval", "0.25", float,
      "how often the deadlines are checked", 0.01),
    S("turn_patience", "TURN_PATIENCE_SECONDS", "--turn-patience", "0.01", float,
      "embedded store: a wait after which requests take turns in arrival order", 0),
    # -- what a client may send ----------------------------------------------------------------
    S("max_request_line", "MAX_REQUEST_LINE_BYTES", "--max-request-line", "8192", int,
      "a longer request line gets 414", 64),
    S("max_header_line", "MAX_HEADER_LINE_BYTES", "--max-header-line", "8192", int,
      "a longer header line gets 431", 64),
    S("max_headers", "MAX_HEADERS", "--max-headers", "100", int, "more header lines get 431", 1),
    S("max_header_bytes", "MAX_HEADER_BYTES", "--max-header-bytes", "65536", int,
      "more bytes of headers in all get 431", 64),
    S("max_body", "MAX_BODY_BYTES", "--max-body", "65536", int,
      "a request body is read and dropped up to this; larger gets 413", 0),
    # -- what answers tell caches and clients ---------------------------------------------------
    S("picture_max_age", "PICTURE_MAX_AGE_SECONDS", "--picture-max-age", "600", int,
      "how long a client may reuse a picture without asking (`max-age`)", 0),
    S("retry_after", "RETRY_AFTER_SECONDS", "--retry-after", "1", int,
      "a 503 says to retry after this (`Retry-After`)", 0),
    # -- the embedded store --------------------------------------------------------------------
    S("db", "USERPROFILE_DB", "--db", "data/userprofile.db", str,
      "the embedded SQLite store (when `COUCHBASE_HOST` is unset)"),
    S("sqlite_busy_timeout", "SQLITE_BUSY_TIMEOUT_SECONDS", "--sqlite-busy-timeout", "2", float,
      "seconds a lookup waits on a locked database (then 503)", 0),
    # -- Couchbase -----------------------------------------------------------------------------
    S("couchbase_host", "COUCHBASE_HOST", "--couchbase-host", None, str,
      "cluster address or full `couchbase(s)://` connection string; unset: embedded store"),
    S("couchbase_user", "COUCHBASE_USER", "--couchbase-user", "Administrator", str, "user name"),
    S("couchbase_password", "COUCHBASE_PASSWORD", None, "password", str, "password (environment only)"),
    S("couchbase_bucket", "COUCHBASE_BUCKET", "--couchbase-bucket", "sample_app", str, "bucket"),
    S("couchbase_scope", "COUCHBASE_SCOPE", "--couchbase-scope", "profiles", str, "scope"),
    S("couchbase_tls", "COUCHBASE_TLS", "--couchbase-tls", "false", boolean,
      "`couchbases://` (TLS) for a bare host"),
    S("couchbase_ca_cert", "COUCHBASE_CA_CERT", "--couchbase-ca-cert", None, str,
      "TLS: PEM file of the CA of the nodes' certificates, trusted alone; unset: the system's CAs and Capella's"),
    S("couchbase_network", "COUCHBASE_NETWORK", "--couchbase-network", "default", str,
      "`external` for a cluster reached through alternate addresses"),
    S("couchbase_kv_timeout", "COUCHBASE_KV_TIMEOUT", "--couchbase-kv-timeout", "2.5", float,
      "seconds for a key-value get; then 504", 0.001),
    S("couchbase_query_timeout", "COUCHBASE_QUERY_TIMEOUT", "--couchbase-query-timeout", "5", float,
      "seconds for a SQL++ lookup (nickname, username); then 504", 0.001),
    S("couchbase_connect_timeout", "COUCHBASE_CONNECT_TIMEOUT", "--couchbase-connect-timeout", "10", float,
      "seconds for one connection attempt", 0.001),
    S("couchbase_mgmt_timeout", "COUCHBASE_MGMT_TIMEOUT", "--couchbase-mgmt-timeout", "120", float,
      "seconds for creating scope, collections, indexes (`loaddata.py`)", 0.001),
    S("couchbase_retry_max", "COUCHBASE_RETRY_MAX", "--couchbase-retry-max", "30", float,
      "longest wait in seconds between connection attempts (backoff from 0.5)", 0.5),
    S("couchbase_replica_reads", "COUCHBASE_REPLICA_READS", "--couchbase-replica-reads", "true", boolean,
      "a replica answers when the active copy does not"),
    S("couchbase_replica_delay", "COUCHBASE_REPLICA_DELAY", "--couchbase-replica-delay", "0.1", float,
      "seconds the active copy gets before replicas are asked", 0.001),
    S("couchbase_health_interval", "COUCHBASE_HEALTH_INTERVAL", "--couchbase-health-interval", "1", float,
      "seconds between key-value health pings", 0.05),
    S("couchbase_sdk_observability", "COUCHBASE_SDK_OBSERVABILITY", "--couchbase-sdk-observability", "false",
      boolean, "the SDK's tracing and metrics, at a CPU cost per request"),
)
# fmt: on
del S

BY_NAME = {s.name: s for s in SETTINGS}
STORES = tuple(s for s in SETTINGS if s.name == "db" or s.name.startswith(("sqlite_", "couchbase_")))


def parser(
    description: str, settings: Sequence[Setting] = SETTINGS, environ: Mapping[str, str] = os.environ
) -> argparse.ArgumentParser:
    """An argument parser with a flag for each setting, its default from the environment."""
    p = argparse.ArgumentParser(description=description)
    for s in settings:
        if s.flag is None:
            continue
        default = environ.get(s.env, s.default)
        kwargs: dict = {"dest": s.name, "help": f"{s.meaning} [{s.env}, default {s.default}]".replace("%", "%%")}
        if s.type is boolean:
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            kwargs.update(type=s.type, default=default, metavar=s.env)
        p.add_argument(s.flag, **kwargs)
    return p


def finish(
    p: argparse.ArgumentParser,
    args: argparse.Namespace,
    settings: Sequence[Setting] = SETTINGS,
    environ: Mapping[str, str] = os.environ,
) -> argparse.Namespace:
    """Convert what came from the environment, add the environment-only settings, check minimums."""
    for s in settings:
        value: Any = getattr(args, s.name) if s.flag is not None else environ.get(s.env, s.default)
        if isinstance(value, str) and s.type is not str:
            try:
                value = s.type(value)
            except ValueError:
                p.error(f"{s.env}: invalid {s.type.__name__} value: {value!r}")
        if value is not None and s.minimum is not None and value < s.minimum:
            p.error(f"{s.flag or s.env} must be at least {s.minimum:g}")
        setattr(args, s.name, value)
    return args


def load(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] = os.environ,
    description: str = "User-profile lookup service (see README.md).",
) -> Options:
    """Command-line flags over environment variables over the defaults of the table."""
    p = parser(description, SETTINGS, environ)
    return Options(**vars(finish(p, p.parse_args(argv), SETTINGS, environ)))


def defaults(environ: Mapping[str, str] | None = None) -> Options:
    """The options with no flags given: from ``environ``, or the table's defaults alone."""
    return load([], environ if environ is not None else {})


def with_defaults(args: argparse.Namespace) -> Options:
    """The options of a tool that takes some settings (loaddata.py: the stores'), the rest the table's defaults."""
    return dataclasses.replace(defaults(), **{s.name: getattr(args, s.name) for s in SETTINGS if hasattr(args, s.name)})


def markdown() -> str:
    """The table as docs/configuration.md shows it (tests/test_settings.py keeps the two the same).
    Flags are left to ``--help``: the table stays short enough to read."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default is not None else "unset"
        rows.append(f"| `{s.env}` | {default} | {s.meaning} |")
    return "\n".join(rows)


TYPE_NAMES = {str: "str", int: "int", float: "float", boolean: "bool"}


def options_module() -> str:
    """options.py, the typed options this table declares (`make settings-table` writes it;
    tests/test_settings.py keeps the two the same)."""
    fields = [
        f"    {s.name}: {TYPE_NAMES[s.type]}{' | None' if s.default is None else ''}  # {s.env}" for s in SETTINGS
    ]
    return "\n".join(
        [
            '"""The options: every setting of settings.SETTINGS, typed and frozen.',
            "",
            "Generated from that table by `make settings-table` (tools/generate.py): edit the table, not this.",
            '"""',
            "",
            "from __future__ import annotations",
            "",
            "from dataclasses import dataclass",
            "",
            "",
            "@dataclass(frozen=True, slots=True)",
            "class Options:",
            *fields,
            "",
        ]
    )


if __name__ == "__main__":
    print(markdown())
