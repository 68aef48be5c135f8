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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import buildinfo
from options import Options


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


# Couchbase's rule for a collection's name, less `%` and a leading digit or `_`, so that it is
# also a valid start of an index's name and an SQLite table's: the stores quote it anyway.
COLLECTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,250}")


def collection_name(text: str) -> str:
    if not COLLECTION_NAME.fullmatch(text):
        raise ValueError(text)
    return text


# OpenTelemetry's sampler names (its OTEL_TRACES_SAMPLER values), those of its own samplers.
SAMPLERS = (
    "parentbased_traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "always_on",
    "always_off",
)


def sampler(text: str) -> str:
    if text.strip() not in SAMPLERS:
        raise ValueError(text)
    return text.strip()


def ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


def http_protobuf(text: str) -> str:
    """OTLP over HTTP with protobuf, OpenTelemetry's default, is the one transport sent."""
    if text.strip() != "http/protobuf":
        raise ValueError(text)
    return text.strip()


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
    S("metrics_port", "METRICS_PORT", "--metrics-port", None, int,
      "`/metrics` on this port alone, for a NetworkPolicy to admit only the scraper; unset: on `SERVICE_PORT`", 0),
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
    S("page_size", "PAGE_SIZE", "--page-size", "100", int,
      "profiles in a page of a nickname or username lookup when the request gives no `limit`", 1),
    S("max_page_size", "MAX_PAGE_SIZE", "--max-page-size", "1000", int,
      "the largest `limit` a request may give (a larger one gets 400); at least `PAGE_SIZE`", 1),
    # -- the data's names: documents are keyed `<collection>:<id>` in both stores ----------------
    S("profiles_collection", "PROFILES_COLLECTION", "--profiles-collection", "user_data", collection_name,
      "the profiles' collection (the embedded store's table)"),
    S("images_collection", "IMAGES_COLLECTION", "--images-collection", "user_images", collection_name,
      "the pictures' collection"),
    S("auth_collection", "AUTH_COLLECTION", "--auth-collection", "service_auth", collection_name,
      "the token's collection (its document `<collection>:1`)"),
    # -- who may call the API (docs/auth.md) ------------------------------------------------------
    S("auth_mode", "AUTH_MODE", "--auth-mode", "token", str,
      "`token`: the token stored in `<AUTH_COLLECTION>:1`; `jwt`: OAuth 2.0 JWT access tokens; `both`: either"),
    S("auth_issuer", "AUTH_ISSUER", "--auth-issuer", None, str,
      "the identity provider's issuer URL: its discovery document names the key set; `iss` must equal it"),
    S("auth_jwks_url", "AUTH_JWKS_URL", "--auth-jwks-url", None, str,
      "the key set's URL, when the provider has no discovery document"),
    S("auth_audience", "AUTH_AUDIENCE", "--auth-audience", None, str,
      "the `aud` a token must contain (required in `jwt` and `both` modes)"),
    S("auth_scope", "AUTH_SCOPE", "--auth-scope", None, str,
      "a scope (`scope` or `scp`) a token must carry for the `/api/v1/` lookups; unset: none"),
    S("auth_algorithms", "AUTH_ALGORITHMS", "--auth-algorithms", "RS256,ES256,PS256,EdDSA", str,
      "signature algorithms accepted; `none` and HMAC never are"),
    S("auth_leeway", "AUTH_LEEWAY_SECONDS", "--auth-leeway", "30", float,
      "clock skew allowed on `exp`, `nbf` and `iat`", 0),
    S("auth_ca_cert", "AUTH_CA_CERT", "--auth-ca-cert", None, str,
      "PEM file of the CA of the provider's HTTPS certificate, trusted alone; unset: the system's CAs"),
    S("auth_timeout", "AUTH_TIMEOUT_SECONDS", "--auth-timeout", "5", float,
      "seconds for one fetch of the discovery document or the key set", 0.1),
    S("auth_jwks_refresh", "AUTH_JWKS_REFRESH_SECONDS", "--auth-jwks-refresh", "300", float,
      "the key set is fetched again this often (sooner if its `max-age` says so); a removed key works until then", 1),
    S("auth_jwks_cooldown", "AUTH_JWKS_COOLDOWN_SECONDS", "--auth-jwks-cooldown", "30", float,
      "least time between fetches for an unknown `kid` (a flood of made-up ones costs one fetch)", 0.1),
    S("auth_cache_size", "AUTH_CACHE_SIZE", "--auth-cache-size", "10000", int,
      "verified tokens kept, each until it expires or its key leaves the key set", 1),
    # -- the embedded store --------------------------------------------------------------------
    S("db", "USERPROFILE_DB", "--db", "data/userprofile.db", str,
      "the embedded SQLite store (when `COUCHBASE_HOST` is unset)"),
    S("sqlite_busy_timeout", "SQLITE_BUSY_TIMEOUT_SECONDS", "--sqlite-busy-timeout", "2", float,
      "seconds a lookup waits on a locked database (then 503)", 0),
    # -- Couchbase -----------------------------------------------------------------------------
    S("couchbase_host", "COUCHBASE_HOST", "--couchbase-host", None, str,
      "cluster address or full `couchbase(s)://` connection string; unset: embedded store"),
    S("couchbase_user", "COUCHBASE_USER", "--couchbase-user", None, str,
      "user name; no default: required with `COUCHBASE_HOST` (read-only roles: docs/data-model.md)"),
    S("couchbase_password", "COUCHBASE_PASSWORD", None, None, str,
      "password (environment only); no default: required with `COUCHBASE_HOST`"),
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
    # -- traces: OpenTelemetry's standard variables, those the service reads (docs/tracing.md) -----
    S("otel_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", "--otlp-endpoint", None, str,
      "OTLP/HTTP collector base URL (`/v1/traces` appended); unset, with the next unset: no export"),
    S("otel_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "--otlp-traces-endpoint", None, str,
      "OTLP/HTTP traces URL, used as it is; wins over the base URL"),
    S("otel_protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", "--otlp-protocol", "http/protobuf", http_protobuf,
      "`http/protobuf`, the one OTLP transport the service sends"),
    S("otel_service_name", "OTEL_SERVICE_NAME", "--otel-service-name", "userprofile-service", str,
      "`service.name` of the spans"),
    S("otel_sampler", "OTEL_TRACES_SAMPLER", "--traces-sampler", "parentbased_traceidratio", sampler,
      "which requests are recorded: OpenTelemetry's sampler names (`always_on`, `parentbased_always_off`...)"),
    S("otel_sampler_ratio", "OTEL_TRACES_SAMPLER_ARG", "--traces-sampler-arg", "1.0", ratio,
      "the ratio samplers' share of new traces, 0 to 1 (`parentbased_`: a caller's `traceparent` decides its own)"),
    S("otel_sdk_disabled", "OTEL_SDK_DISABLED", None, "false", boolean,
      "no export, whatever the endpoint (environment only: the OpenTelemetry SDK reads it too)"),
)
# fmt: on
del S

BY_NAME = {s.name: s for s in SETTINGS}
STORES = tuple(
    s
    for s in SETTINGS
    if s.name == "db" or s.name.startswith(("sqlite_", "couchbase_")) or s.name.endswith("_collection")
)


@dataclass(frozen=True)
class Unparsed:
    """A setting's text from its environment variable (or the table's default), parsed by
    ``finish`` so that an error names the variable: argparse parses a default that is a
    string itself, naming a flag never passed ("argument --port" for SERVICE_PORT=abc)."""

    text: str


def parser(
    description: str, settings: Sequence[Setting] = SETTINGS, environ: Mapping[str, str] = os.environ
) -> argparse.ArgumentParser:
    """An argument parser with a flag for each setting, its default from the environment."""
    p = argparse.ArgumentParser(description=description, epilog=environment_only(settings))
    add_flags(p, settings, environ)
    return p


def add_flags(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, settings: Sequence[Setting], environ: Mapping[str, str]
) -> None:
    """A flag for each setting that has one, its default the environment's text, not yet parsed."""
    for s in settings:
        if s.flag is None:
            continue
        text = environ.get(s.env, s.default)
        default = Unparsed(text) if text is not None else None
        kwargs: dict = {"dest": s.name, "help": f"{s.meaning} [{s.env}, default {s.default}]".replace("%", "%%")}
        if s.type is boolean:
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            kwargs.update(type=s.type, default=default, metavar=s.env)
        p.add_argument(s.flag, **kwargs)


def environment_only(settings: Sequence[Setting]) -> str | None:
    """What --help says of the settings without a flag: where they come from."""
    lines = [f"{s.env}: {s.meaning}".replace("%", "%%").replace("`", "") for s in settings if s.flag is None]
    if not lines:
        return None
    return "From the environment only (never a flag, which a process listing shows): " + "; ".join(lines) + "."


def finish(
    p: argparse.ArgumentParser,
    args: argparse.Namespace,
    settings: Sequence[Setting] = SETTINGS,
    environ: Mapping[str, str] = os.environ,
) -> argparse.Namespace:
    """Parse what came from the environment (an error names its variable), add the
    environment-only settings, check minimums."""
    for s in settings:
        # A flag's value argparse has parsed; the environment's text is parsed here.
        value: Any = getattr(args, s.name) if s.flag is not None else environ.get(s.env, s.default)
        named = s.flag if s.flag is not None and not isinstance(value, Unparsed) else s.env  # where it came from
        if isinstance(value, Unparsed):
            value = value.text
        if isinstance(value, str) and s.type is not str:
            try:
                value = s.type(value)
            except ValueError:
                p.error(f"{s.env}: invalid {s.type.__name__} value: {value!r}")
        if value is not None and s.minimum is not None and value < s.minimum:
            p.error(f"{named} must be at least {s.minimum:g}")
        setattr(args, s.name, value)
    if getattr(args, "couchbase_host", None):
        try:
            couchbase_credentials(args)
        except ValueError as exc:  # one line, not the usage of every flag
            p.exit(2, f"{p.prog}: error: {exc}\n")
    return args


def couchbase_credentials(options: Any) -> tuple[str, str]:
    """(user, password) for a Couchbase store; ValueError naming the setting when one is unset
    or empty. Neither has a default: a cluster's user is the team's own (docs/data-model.md)."""
    user, password = options.couchbase_user, options.couchbase_password
    for value, env in ((user, "COUCHBASE_USER"), (password, "COUCHBASE_PASSWORD")):
        if not value:
            raise ValueError(f"{env} is not set: COUCHBASE_HOST names a cluster, and its credentials have no default")
    return user, password


def load(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] = os.environ,
    description: str = "User-profile lookup service (see README.md).",
) -> Options:
    """Command-line flags over environment variables over the defaults of the table."""
    p = parser(description, SETTINGS, environ)
    p.add_argument("--version", action="version", version=buildinfo.describe())
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


TYPE_NAMES = {
    str: "str",
    int: "int",
    float: "float",
    boolean: "bool",
    collection_name: "str",
    sampler: "str",
    ratio: "float",
    http_protobuf: "str",
}


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
