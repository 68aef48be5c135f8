"""The options: every setting of settings.SETTINGS, typed and frozen.

Generated from that table by `make settings-table` (tools/generate.py): edit the table, not this.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Options:
    host: str  # SERVICE_HOST
    port: int  # SERVICE_PORT
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
    db: str  # USERPROFILE_DB
    sqlite_busy_timeout: float  # SQLITE_BUSY_TIMEOUT_SECONDS
    couchbase_host: str | None  # COUCHBASE_HOST
    couchbase_user: str  # COUCHBASE_USER
    couchbase_password: str  # COUCHBASE_PASSWORD
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
