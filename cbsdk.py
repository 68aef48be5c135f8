"""What the Couchbase store needs of the SDK and of the wire, apart from the store itself.

The SDK's direct C++ calls under its Python wrapper (``core_calls``, ``direct``, ``DirectCalls``),
the connection string from the settings, SDK errors as one short line and as the
store's errors (``describe``, ``mapped``), a ping of the key-value nodes (``ping_nodes``), and the
NOOP probe that tells a lost node's return (``answers_noop``).
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from couchbase import exceptions as cbe
from couchbase.diagnostics import PingState, ServiceType
from couchbase.options import GetAnyReplicaOptions, GetOptions, PingOptions
from couchbase.transcoder import RawJSONTranscoder

try:  # the SDK's own C++ calls, under its Python wrapper: see core_calls
    from couchbase.exceptions import ErrorMapper
    from couchbase.logic.operation_types import KeyValueOperationCode
    from couchbase.logic.pycbc_core import pycbc_exception, pycbc_kv_request

    GET = KeyValueOperationCode.Get.value
    GET_ANY_REPLICA = KeyValueOperationCode.GetAnyReplica.value
except ImportError:  # another SDK's layout: the public calls only
    pycbc_kv_request = None
    GET = GET_ANY_REPLICA = 0

import cbdns
import cbtls
from logs import log
from options import Options
from store import StoreTimeout, StoreUnavailable

RAW = RawJSONTranscoder()
# A memcached binary-protocol NOOP: any answer to it (even a refusal before a login)
# shows the node's key-value service is back.
NOOP = struct.pack(">BBHBBHIIQ", 0x80, 0x0A, 0, 0, 0, 0, 0, 0, 0)
TIMEOUTS = (cbe.TimeoutException, cbe.AmbiguousTimeoutException, cbe.UnAmbiguousTimeoutException)
# What a get's store answers by either path: the direct calls raise these as the public ones would.
STORE_ANSWERS = (*TIMEOUTS, cbe.DocumentNotFoundException, cbe.DocumentUnretrievableException)


def core_calls(collection: Any) -> tuple[Any, Any] | None:
    """The C++ get and get-any-replica under ``Collection``'s, or None when the SDK is
    not laid out as 4.6's is.

    Per call ``Collection.get`` merges options, opens an observability handler and
    wraps the answer in a result object, none of which the service uses: a tenth of
    a get's CPU (bench/README.md, bench/sdk_micro.py: store, sdk-core). These are
    the SDK's internals, not its API: the store uses them only once they agree with
    the public calls (``DirectCalls``), and drops them for good at
    their first error that is not a store error.
    """
    if pycbc_kv_request is None:
        return None
    try:
        connection = collection._impl._client_adapter.connection
        return connection.pycbc_get, connection.pycbc_get_any_replica
    except AttributeError:
        return None


def direct(
    call: Any, opcode: int, bucket: str, scope: str, collection: str, key: str, timeout_ms: int
) -> tuple[bytes, bool]:
    """The document and whether a replica gave it, by one of ``core_calls``: what
    ``Collection.get`` (or ``get_any_replica``) does with no options but a timeout,
    minus the wrapper."""
    request = pycbc_kv_request()
    request.opcode = opcode
    request.bucket, request.scope, request.collection, request.key = bucket, scope, collection, key
    if timeout_ms:
        request.timeout = timeout_ms
    found = call(request)
    if isinstance(found, pycbc_exception):
        raise ErrorMapper.build_exception(found)
    raw = found.raw_result
    value, replica = RAW.decode_value(raw["value"], raw["flags"]), raw.get("replica", False)
    if type(value) is not bytes or type(replica) is not bool:
        raise TypeError(f"a result of another shape: {type(value).__name__}, {type(replica).__name__}")
    return value, replica


# DirectCalls.get's first argument: which of the two calls.
ACTIVE, ANY_COPY = 0, 1
OPCODES = (GET, GET_ANY_REPLICA)


class DirectCalls:
    """``core_calls`` of one connection, used only while they agree with the public calls:
    checked on a real document (the token's) before their first use, and dropped for good,
    with one log line, at their first error that is not a store error."""

    __slots__ = ("bucket", "scope", "auth", "token_key", "recording", "calls", "unchecked")

    def __init__(self, bucket: str, scope: str, auth: str, token_key: str, recording: Callable[[], bool] | None = None):
        self.bucket, self.scope = bucket, scope
        self.auth, self.token_key = auth, token_key  # the token's collection and document: checked on
        # With traces exported: whether the current request is recorded; its gets then take the
        # public call, which the SDK traces (otelexport.py).
        self.recording = recording
        self.calls: tuple[Any, Any] | None = None  # (get, get_any_replica), once checked
        self.unchecked: tuple[Any, Any] | None = None  # found, not yet checked: no document to check them on yet

    def found(self, collection: Any, observability: bool) -> None:
        """A new connection's, to be checked. With observability on, every get goes through
        the wrapper, which records it: none then."""
        self.calls, self.unchecked = None, None if observability else core_calls(collection)

    def check(self, auth: Any, timeout: timedelta) -> None:
        """Put the calls found in use if they give the public calls' answers for the token's
        document; until it can be read, this does nothing (call it again later)."""
        candidate = self.unchecked
        if candidate is None:
            return
        try:
            expected = (
                auth.get(self.token_key, GetOptions(timeout=timeout)).value,
                auth.get_any_replica(self.token_key, GetAnyReplicaOptions(timeout=timeout)).value,
            )
        except Exception:  # nothing to check against yet (not loaded, or a node down)
            return
        self.unchecked = None
        timeout_ms = round(timeout.total_seconds() * 1000)
        found: tuple[bytes, ...] | Exception
        try:
            found = tuple(
                direct(call, opcode, self.bucket, self.scope, self.auth, self.token_key, timeout_ms)[0]
                for call, opcode in zip(candidate, OPCODES, strict=True)
            )
        except Exception as exc:  # whatever it is, the public calls are the safe ones
            found = exc
        if found == expected:
            self.calls = candidate
        else:
            log(
                "couchbase: the SDK's direct calls do not agree with its public ones "
                f"({describe(found) if isinstance(found, Exception) else 'other bytes'}); using the public ones"
            )

    def get(
        self, which: int, collection: str, key: str, timeout_ms: int, public: Callable[..., Any], *options: Any
    ) -> tuple[bytes, bool]:
        """The document and whether a replica gave it, by the direct call ``which`` (ACTIVE,
        ANY_COPY) while they are in use, else by ``public(key, *options)``, the public call.

        A store's answer (a timeout, "not found") is the same by either path and is raised as
        it is. Anything else the direct call raises, a CouchbaseException included, may be
        the SDK changed under it: the public call then decides. If it answers, or fails
        otherwise, the direct calls are dropped for good, with one log line."""
        calls = self.calls
        if calls is not None and (self.recording is None or not self.recording()):
            try:
                return direct(calls[which], OPCODES[which], self.bucket, self.scope, collection, key, timeout_ms)
            except STORE_ANSWERS:
                raise
            except Exception as exc:  # a store fault, or the SDK changed: the public call says
                failed = exc
        else:
            failed = None
        try:
            row = public(key, *options)
        except Exception as exc:
            if failed is not None and type(exc) is not type(failed):
                self.drop(failed)
            raise
        if failed is not None:
            self.drop(failed)
        return row.value, getattr(row, "is_replica", False)

    def drop(self, exc: Exception) -> None:
        if self.calls is not None:
            self.calls = None
            log(
                f"couchbase: the SDK's direct calls failed ({describe(exc)}) where its public ones did not; "
                "using the public ones from now on"
            )


def connection_string(options: Options) -> str:
    """The configured host as a connection string: a full one is used as it is."""
    host = (options.couchbase_host or "").strip()  # set: the embedded store is chosen otherwise
    if "://" in host:
        return host
    connstr = f"{'couchbases' if options.couchbase_tls else 'couchbase'}://{host}"
    network = options.couchbase_network.strip()
    if network and network != "default":
        connstr += f"{'&' if '?' in host else '?'}network={network}"
    return connstr


def describe(exc: BaseException) -> str:
    """One short line for an SDK error: its class and the core's message, not its whole context."""
    found = re.search(r"message=([^,>]+)", str(exc))
    detail = found.group(1).strip() if found else str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def query_error_code(exc: BaseException) -> int | None:
    """The query engine's code of the first error of a failed SQL++ request, when it gave one."""
    code = getattr(getattr(exc, "context", None), "first_error_code", None)
    return code if isinstance(code, int) else None


def cause(exc: BaseException, user: str) -> str:
    """Why a connection attempt failed, by kind, as the log line and /readyz say it: DNS, TLS and
    the credentials refused by the service's own checks (their messages say so), the credentials
    refused by the SDK, a timeout, else the SDK's own words. Never the password: no message here
    is made with it."""
    if isinstance(exc, cbdns.DnsFailure | cbtls.Refused):
        return str(exc)
    if isinstance(exc, cbe.AuthenticationException):
        return f"authentication: the cluster refused user {user!r} ({describe(exc)})"
    if isinstance(exc, TIMEOUTS):
        return f"timeout: no key-value node answered in time ({describe(exc)})"
    return describe(exc)


def every_copy_missing(exc: BaseException) -> bool | None:
    """Whether a DocumentUnretrievableException is every copy's "not found" (its context's
    memcached status 1, KEY_ENOENT) rather than no copy answering (no status: a timeout, refused
    connections); None when the SDK's message does not say (another layout than 4.6's)."""
    found = re.search(r"'status_code': (\w+)", str(exc))
    return None if found is None else found.group(1) == "1"


def mapped(exc: Exception) -> StoreUnavailable:
    """An SDK error as the store error the handler turns into 503 or 504."""
    if isinstance(exc, TIMEOUTS):
        return StoreTimeout(f"couchbase: {describe(exc)}")
    return StoreUnavailable(f"couchbase: {describe(exc)}")


def ping_nodes(bucket: Any, timeout: timedelta) -> tuple[set[str], dict[str, str]]:
    """Ping the bucket's key-value nodes: those that answered, and those that did not
    with the SDK's reason."""
    try:
        kv_only = PingOptions(service_types=[ServiceType.KeyValue], timeout=timeout)
        reports = [r for rs in bucket.ping(kv_only).endpoints.values() for r in rs]
    except Exception as exc:
        return set(), {"every node": describe(exc)}
    answered = {node_name(r) for r in reports if r.state == PingState.OK}
    lost = {
        node_name(r): f"{r.state.value}: {r.error}" if r.error else str(r.state.value)
        for r in reports
        if r.state != PingState.OK
    }
    return answered, {node: why for node, why in lost.items() if node not in answered}


def kv_answers(auth: Any, token_key: str, timeout: timedelta) -> bool:
    """Whether a get of the token's document is answered (found or not) though no node answered
    the ping: started with a node frozen, SDK 4.6.3's ping can list only the session it still
    bootstraps to that node, and not the one it reads from."""
    try:
        auth.get(token_key, GetOptions(timeout=timeout))
        return True
    except cbe.DocumentNotFoundException:
        return True
    except Exception:  # its active copy may be on the lost node: ask its replicas
        pass
    try:
        auth.get_any_replica(token_key, GetAnyReplicaOptions(timeout=timeout))
        return True
    except Exception:  # "unretrievable" is no proof that a node answered
        return False


def node_name(report: Any) -> str:
    """A pinged endpoint's node: its address, or the one its error names (a refused
    node is reported with no remote address)."""
    remote = str(report.remote or "")
    if remote and not remote.startswith("0.0.0.0:"):  # nosec B104  # how the SDK says "no address"
        return remote
    named = re.search(r'"([^"\s]+:\d+)"', str(report.error or ""))
    return named.group(1) if named else "unnamed"  # its id changes from ping to ping


def answers_noop(node: str, timeout: float, tls: ssl.SSLContext | None = None) -> bool:
    """Whether a node's key-value port answers a NOOP on a new connection (a response's
    magic byte, whatever its status); over TLS (``tls``), after a handshake."""
    host, _, port = node.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout) as raw:
            raw.settimeout(timeout)
            with tls.wrap_socket(raw, server_hostname=None) if tls else raw as sock:
                sock.sendall(NOOP)
                return sock.recv(24)[:1] == b"\x81"
    except (OSError, ValueError):
        return False
