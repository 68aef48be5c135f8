"""cbtls without a socket: the trust handed to the SDK and to Python's ssl, the hosts checked,
the nodes read from a bucket's configuration, and lookups refused while a node's certificate
is. (Over real TLS, through a terminator in front of CAVES: test_tls.py.)"""

from __future__ import annotations

import json
import struct

import pytest
import yaml

import cbconn
import cbtls
import settings
from store import StoreUnavailable
from testkit import ROOT

pytestmark = pytest.mark.inprocess


def test_the_hosts_of_a_connection_string_with_the_tls_port_by_default():
    assert cbtls.hosts("couchbases://a.example.com,b.example.com:1207, [::1]?network=external") == [
        ("a.example.com", 11207),
        ("b.example.com", 1207),
        ("::1", 11207),
    ]
    assert cbtls.is_tls("couchbases://x") and not cbtls.is_tls("couchbase://x")


def test_the_sdk_trusts_the_ca_given_alone_and_never_its_mozilla_bundle():
    assert cbtls.sdk_options(None) == {"disable_mozilla_ca_certificates": True}
    assert cbtls.sdk_options("/etc/ca.pem") == {
        "disable_mozilla_ca_certificates": True,
        "trust_store_path": "/etc/ca.pem",
    }


def test_without_a_ca_python_trusts_capellas_as_the_sdk_does():
    cas: list[dict] = cbtls.trust(None).get_ca_certs()  # typeshed types each field as any of them
    subjects = [dict(pair[0] for pair in ca["subject"]) for ca in cas]
    assert {"organizationName": "Couchbase", "organizationalUnitName": "Cloud"} in subjects
    context = cbtls.trust(None)
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"


def store(monkeypatch, **env):
    monkeypatch.setattr(cbconn.CouchbaseStore, "start", lambda self: None)  # no connecting
    return cbconn.CouchbaseStore.from_environ({"COUCHBASE_PASSWORD": "pw", **env})


def test_cluster_options_over_tls_only(monkeypatch):
    tls = store(monkeypatch, COUCHBASE_HOST="db.example.com", COUCHBASE_TLS="true", COUCHBASE_CA_CERT="/ca.pem")
    assert tls.connstr == "couchbases://db.example.com" and tls.names is not None
    assert tls.names.bootstrap == [("db.example.com", 11207)]
    options = tls._options()
    assert options["trust_store_path"] == "/ca.pem" and options["disable_mozilla_ca_certificates"] is True
    plain = store(monkeypatch, COUCHBASE_HOST="db.example.com")
    assert plain.names is None and "trust_store_path" not in plain._options()
    assert settings.defaults({}).couchbase_ca_cert is None


class Wire:
    """A node's answers to the configuration's three requests, in order, as bytes on a socket."""

    def __init__(self, config: dict, status: int = 0):
        self.sent: list[bytes] = []
        body = json.dumps(config).encode()
        answers = [(0, b""), (0, b""), (status, body)]
        self.data = b"".join(struct.pack(">BBHBBHIIQ", 0x81, 0, 0, 0, 0, s, len(b), 0, 0) + b for s, b in answers)

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)

    def recv(self, n: int) -> bytes:
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


def test_the_nodes_of_the_bucket_configuration():
    config = {
        "nodesExt": [
            {"services": {"kv": 11210, "kvSSL": 11207}, "thisNode": True},  # no name: the host asked
            {
                "hostname": "n2.example.com",
                "services": {"kvSSL": 11207},
                "alternateAddresses": {"external": {"hostname": "n2.public.example", "ports": {"kvSSL": 31207}}},
            },
            {"hostname": "query-only.example.com", "services": {"n1qlSSL": 18093}},  # no key-value service
        ]
    }
    # Wire is not the SSLSocket nodes() takes, only as much of one as it uses.
    wire = Wire(config)
    assert cbtls.nodes(
        wire,  # type: ignore[arg-type]
        "n1.example.com",
        "app",
        "pw",
        "sample_app",
        external=False,
    ) == [("n1.example.com", 11207), ("n2.example.com", 11207)]
    assert wire.sent[0].endswith(b"PLAIN\0app\0pw") and wire.sent[1].endswith(b"sample_app")
    assert cbtls.nodes(
        Wire(config),  # type: ignore[arg-type]
        "n1.example.com",
        "app",
        "pw",
        "sample_app",
        external=True,
    ) == [("n1.example.com", 11207), ("n2.public.example", 31207)]
    with pytest.raises(OSError, match="status 0x1"):
        cbtls.nodes(Wire(config, status=1), "n1", "app", "pw", "b", external=False)  # type: ignore[arg-type]


def test_a_refused_certificate_refuses_lookups_until_a_check_passes(monkeypatch, capsys):
    s = store(monkeypatch, COUCHBASE_HOST="couchbases://n1.example.com")
    s._connected.set()
    s.health.healthy = True
    outcomes = [
        cbtls.Refused("TLS: the certificate of n1.example.com:11207 is refused: Hostname mismatch"),
        ([("n1.example.com", 11207)], []),
    ]

    def run():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(s.names, "run", run)
    with pytest.raises(cbtls.Refused):
        s.names.check()
    with pytest.raises(StoreUnavailable, match="Hostname mismatch"):
        s.get_profile("1")
    with pytest.raises(StoreUnavailable):
        s.ping()  # /readyz: 503
    s.names.check()
    assert s.names.refused is None
    err = capsys.readouterr().err
    assert err.count("lookups refused") == 1 and err.count("lookups resume") == 1


def test_the_deployment_patch_mounts_the_ca_where_its_setting_names_it():
    """k8s/tls/ca.yaml (k8s/README.md): the settings it sets exist, and the file the service reads
    is the Secret's key, mounted read-only."""
    patch = yaml.safe_load((ROOT / "k8s" / "tls" / "ca.yaml").read_text())
    pod = patch["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env.keys() <= {s.env for s in settings.SETTINGS} and settings.boolean(env["COUCHBASE_TLS"])
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    (item,) = volume["secret"]["items"]
    assert mount["readOnly"] is True and mount["name"] == volume["name"]
    assert env["COUCHBASE_CA_CERT"] == f"{mount['mountPath']}/{item['path']}"
    assert "optional" not in volume["secret"]  # no CA, no pod: never one trusting what it should not


def test_names_are_checked_again_when_the_nodes_answering_change_while_refused_and_now_and_then(monkeypatch):
    check = cbtls.NameCheck("couchbases://a,b", None, "u", "pw", "bucket", 1.0)
    runs: list = []
    outcome: list = [([("a", 11207)], [])]

    def run():
        runs.append(1)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(check, "run", run)
    check.after_ping({"a:1", "b:2"})
    check.after_ping({"a:1", "b:2"})
    assert len(runs) == 1  # nothing changed
    check.after_ping({"a:1"})  # b lost
    check.after_ping({"a:1", "b:2"})  # b back
    assert len(runs) == 3
    outcome[0] = cbtls.Refused("TLS: the certificate of b:11207 is refused: Hostname mismatch")
    monkeypatch.setattr(cbtls, "RECHECK_SECONDS", 0.0)  # now and then: at once, here
    check.after_ping({"a:1", "b:2"})
    assert len(runs) == 4 and check.refused
    monkeypatch.setattr(cbtls, "RECHECK_SECONDS", 3600.0)
    check.after_ping({"a:1", "b:2"})  # refused: tried again each ping
    outcome[0] = ([("a", 11207), ("b", 11207)], [])
    check.after_ping({"a:1", "b:2"})
    assert len(runs) == 6 and check.refused is None
    check.after_ping({"a:1", "b:2"})
    assert len(runs) == 6


def test_connected_a_check_no_node_answers_in_time_keeps_the_names_checked_before(monkeypatch, capsys):
    """A busy machine: every handshake of a check times out. Before connecting that refuses (no
    name is known good: the cluster is down, or named only by DNS SRV); connected, the names
    checked before stay trusted. A certificate refused refuses either way."""
    check = cbtls.NameCheck("couchbases://a", None, "u", "pw", "bucket", 1.0)
    outcome: list = [cbtls.Unchecked("TLS: no node's certificate could be checked (a:11207: timed out)")]

    def run():
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(check, "run", run)
    with pytest.raises(cbtls.Unchecked):
        check.check(log_refusal=False)  # connecting
    assert check.refused
    outcome[0] = ([("a", 11207)], [])
    check.check()
    outcome[0] = cbtls.Unchecked("TLS: no node's certificate could be checked (a:11207: timed out)")
    check.check(keep_checked=True)
    assert check.refused is None
    assert "stay trusted" in capsys.readouterr().err
    outcome[0] = cbtls.Refused("TLS: the certificate of a:11207 is refused: Hostname mismatch")
    with pytest.raises(cbtls.Refused):
        check.check(keep_checked=True)
    assert check.refused and "Hostname mismatch" in check.refused
