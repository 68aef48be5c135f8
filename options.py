"""The options: every setting of settings.SETTINGS, typed and frozen.

Generated from that table by `make settings-table` (tools/generate.py): edit the table, not this.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Options:
    host: str  # SERVICE_HOST
    port: int  # SERVICE_PORT
    metrics_port: int | None  # METRICS_PORT
    workers: int  # WORKERS
    token_refresh: float  # TOKEN_REFRESH_SECONDS
    access_log: bool  # ACCESS_LOG
    max_connections: int  # MAX_CONNECTIONS
    backlog: int  # LISTEN_BACKLOG
    idle_timeout: float  # IDLE_TIMEOUT_SECONDS
    header_timeout: float  # HEADER_TIMEOUT_SECONDS
    write_timeout: float  # WRITE_TIMEOUT_SECONDS
    shutdown_grace: float  # SHUTDOWN_GRACE_SECONDS
    drain_idle: float  # DRAIN_IDLE_SECONDS
    max_requests_per_connection: int  # MAX_REQUESTS_PER_CONNECTION
    max_connection_age: float  # MAX_CONNECTION_AGE_SECONDS
    watchdog_interval: float  # WATCHDOG_INTERVAL_SECONDS
    turn_patience: float  # TURN_PATIENCE_SECONDS
    max_request_line: int  # MAX_REQUEST_LINE_BYTES
    max_header_line: int  # MAX_HEADER_LINE_BYTES
    max_headers: int  # MAX_HEADERS
    max_header_bytes: int  # MAX_HEADER_BYTES
    max_body: int  # MAX_BODY_BYTES
    picture_max_age: int  # PICTURE_MAX_AGE_SECONDS
    retry_after: int  # RETRY_AFTER_SECONDS
    page_size: int  # PAGE_SIZE
    max_page_size: int  # MAX_PAGE_SIZE
    profiles_collection: str  # PROFILES_COLLECTION
    images_collection: str  # IMAGES_COLLECTION
    auth_collection: str  # AUTH_COLLECTION
    auth_mode: str  # AUTH_MODE
    auth_issuer: str | None  # AUTH_ISSUER
    auth_jwks_url: str | None  # AUTH_JWKS_URL
    auth_audience: str | None  # AUTH_AUDIENCE
    auth_scope: str | None  # AUTH_SCOPE
    auth_algorithms: str  # AUTH_ALGORITHMS
    auth_leeway: float  # AUTH_LEEWAY_SECONDS
    auth_ca_cert: str | None  # AUTH_CA_CERT
    auth_timeout: float  # AUTH_TIMEOUT_SECONDS
    auth_jwks_refresh: float  # AUTH_JWKS_REFRESH_SECONDS
    auth_jwks_cooldown: float  # AUTH_JWKS_COOLDOWN_SECONDS
    auth_cache_size: int  # AUTH_CACHE_SIZE
    db: str  # USERPROFILE_DB
    sqlite_busy_timeout: float  # SQLITE_BUSY_TIMEOUT_SECONDS
    couchbase_host: str | None  # COUCHBASE_HOST
    couchbase_user: str | None  # COUCHBASE_USER
    couchbase_password: str | None  # COUCHBASE_PASSWORD
    couchbase_bucket: str  # COUCHBASE_BUCKET
    couchbase_scope: str  # COUCHBASE_SCOPE
    couchbase_tls: bool  # COUCHBASE_TLS
    couchbase_ca_cert: str | None  # COUCHBASE_CA_CERT
    couchbase_network: str  # COUCHBASE_NETWORK
    couchbase_kv_timeout: float  # COUCHBASE_KV_TIMEOUT
    couchbase_query_timeout: float  # COUCHBASE_QUERY_TIMEOUT
    couchbase_connect_timeout: float  # COUCHBASE_CONNECT_TIMEOUT
    couchbase_mgmt_timeout: float  # COUCHBASE_MGMT_TIMEOUT
    couchbase_retry_max: float  # COUCHBASE_RETRY_MAX
    couchbase_replica_reads: bool  # COUCHBASE_REPLICA_READS
    couchbase_replica_delay: float  # COUCHBASE_REPLICA_DELAY
    couchbase_health_interval: float  # COUCHBASE_HEALTH_INTERVAL
    couchbase_sdk_observability: bool  # COUCHBASE_SDK_OBSERVABILITY
    otel_endpoint: str | None  # OTEL_EXPORTER_OTLP_ENDPOINT
    otel_traces_endpoint: str | None  # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    otel_protocol: str  # OTEL_EXPORTER_OTLP_PROTOCOL
    otel_service_name: str  # OTEL_SERVICE_NAME
    otel_sampler: str  # OTEL_TRACES_SAMPLER
    otel_sampler_ratio: float  # OTEL_TRACES_SAMPLER_ARG
    otel_sdk_disabled: bool  # OTEL_SDK_DISABLED
