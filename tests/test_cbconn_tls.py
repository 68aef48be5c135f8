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
from testkit.caves import CREDENTIALS

pytestmark = pytest.mark.inprocess


def test_tls_is_the_couchbases_scheme():
    # The hosts checked, the TLS port by default and DNS SRV: test_cbdns.py.
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
    return cbconn.CouchbaseStore.from_environ({**CREDENTIALS, **env})


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
    """A node's answers to the configuration's three requests, in order, as bytes on a socket
    (``statuses``: of the login, the bucket's selection and the configuration)."""

    def __init__(self, config: dict, status: int = 0, statuses: tuple[int, int] = (0, 0)):
        self.sent: list[bytes] = []
        body = json.dumps(config).encode()
        answers = [(statuses[0], b""), (statuses[1], b""), (status, body)]
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


def test_the_ca_component_mounts_the_ca_where_its_setting_names_it():
    """k8s/components/couchbase-ca (k8s/README.md): the settings it sets exist, and the file the
    service reads is the ConfigMap's key, mounted read-only."""
    component = ROOT / "k8s" / "components" / "couchbase-ca"
    patches = yaml.safe_load((component / "kustomization.yaml").read_text())["patches"]
    (config_patch,) = [p for p in patches if p["target"]["kind"] == "ConfigMap"]
    env = {op["path"].removeprefix("/data/"): op["value"] for op in yaml.safe_load(config_patch["patch"])}
    assert env.keys() <= {s.env for s in settings.SETTINGS} and settings.boolean(env["COUCHBASE_TLS"])
    assert {p["path"] for p in patches if p["target"]["kind"] != "ConfigMap"} == {"mount-ca.yaml"}
    volume, mount = (op["value"] for op in yaml.safe_load((component / "mount-ca.yaml").read_text()))
    (item,) = volume["configMap"]["items"]
    assert mount["readOnly"] is True and mount["name"] == volume["name"]
    assert env["COUCHBASE_CA_CERT"] == f"{mount['mountPath']}/{item['path']}"
    assert "optional" not in volume["configMap"]  # no CA, no pod: never one trusting what it should not


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


@pytest.mark.parametrize(
    "statuses, said",
    [
        ((0x20, 0), "authentication: n1 refused the credentials of user 'app'"),
        ((0, 0x24), "authentication: n1: user 'app' has no access to the bucket 'sample_app'"),
    ],
)
def test_credentials_refused_by_a_checked_node_are_named_without_the_password(statuses, said):
    """At the wire: CAVES takes any password over PLAIN (what TLS logs in with), so no test through
    the terminator can see a refusal; the SDK's own (SCRAM, plain) on CAVES: test_caves.py."""
    wire = Wire({}, statuses=statuses)
    with pytest.raises(cbtls.Denied) as denied:
        cbtls.nodes(wire, "n1", "app", "timeout", "sample_app", external=False)  # type: ignore[arg-type]
    assert str(denied.value) == said


class Handshaken:
    """What run() does with a verified connection: closes it, or reads the configuration on it."""

    def close(self):
        pass

    def settimeout(self, timeout):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_every_node_to_bootstrap_from_is_checked_then_every_node_of_the_configuration(monkeypatch):
    """The SRV targets (or the hosts written) each, since the SDK bootstraps from any of them; the
    configuration from the first that answers; each node once."""
    shaken: list = []

    def handshake(host, port, context, timeout):
        shaken.append((host, port))
        if host == "renamed":
            raise cbtls.Refused(f"TLS: the certificate of {host}:{port} is refused: Hostname mismatch")
        if host == "down":
            raise OSError("timed out")
        return Handshaken()

    monkeypatch.setattr(cbtls, "handshake", handshake)
    monkeypatch.setattr(cbtls, "nodes", lambda sock, host, *rest: [("n0", 11207), ("n2", 11207)])
    check = cbtls.NameCheck("couchbases://cb.example.net", None, "app", "pw", "bucket", 1.0)
    assert check.bootstrap == [("cb.example.net", 11207)]  # until DNS is asked (cbconn sets the targets)
    check.bootstrap = [("down", 11207), ("n0", 11207), ("n1", 11207)]
    checked, unchecked = check.run()
    assert shaken == [("down", 11207), ("n0", 11207), ("n1", 11207), ("n2", 11207)]
    assert checked == [("n0", 11207), ("n1", 11207), ("n2", 11207)] and unchecked == ["down:11207: timed out"]
    check.check()
    assert check.checked == {("n0", 11207), ("n1", 11207), ("n2", 11207)}
    check.bootstrap = [("n0", 11207), ("renamed", 11207)]  # a new SRV target, behind another name's certificate
    with pytest.raises(cbtls.Refused, match="renamed:11207 is refused"):
        check.check()
    assert check.refused and "renamed" in check.refused


def test_connected_credentials_refused_now_keep_the_names_checked_before(monkeypatch, capsys):
    check = cbtls.NameCheck("couchbases://a", None, "u", "pw", "bucket", 1.0)
    outcome: list = [([("a", 11207)], [])]

    def run():
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(check, "run", run)
    check.check()
    outcome[0] = cbtls.Denied("authentication: a refused the credentials of user 'u'")
    check.check(keep_checked=True)  # the SDK's sessions logged in before
    assert check.refused is None and "stay trusted" in capsys.readouterr().err
    with pytest.raises(cbtls.Denied):
        check.check(log_refusal=False)  # connecting: the attempt fails, naming it
