"""Keycloak, a real identity provider, for the JWT tests and `make loadtest`'s bearer token.

``tools/install_keycloak.sh`` lays it out under .tools/ once; ``Keycloak`` starts it over HTTPS
on a free loopback port with a certificate the caller made (the tests' own CA), imports the
realms from ``keycloak-realm.json`` beside this file (one copy per realm name: each realm has
its own keys, so one test's key rotation leaves another's keys alone), and drives it as a
calling service and its operator would: tokens by the client-credentials grant, signing keys
added and removed through the admin API. A missing Keycloak fails the test, saying how to
install it; it is never a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

from testkit import ROOT, free_port

INSTALL = ROOT / "tools" / "install_keycloak.sh"
REALM = Path(__file__).resolve().parent / "keycloak-realm.json"
CLIENT, SECRET = "svc-client", "svc-secret"  # the service's caller: audience userprofile
SHORT_CLIENT, SHORT_SECRET = "svc-short", "svc-short-secret"  # the same, its tokens live 3 s
OTHER_CLIENT, OTHER_SECRET = "svc-other", "svc-other-secret"  # its tokens are for audience billing
ADMIN_CLIENT, ADMIN_SECRET = "kc-admin", "kc-admin-secret"  # may manage the realm's keys
SCOPE = "profiles:read"
KEY_PROVIDER = "org.keycloak.keys.KeyProvider"


def keycloak_home() -> Path:
    """The installed Keycloak (tools/install_keycloak.sh, which make test-integration runs)."""
    found = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if found.returncode != 0:
        raise RuntimeError(f"Keycloak is not installed and could not be: {found.stderr[-2000:]}")
    return Path(found.stdout.strip().splitlines()[-1])


class Keycloak:
    """One Keycloak process on 127.0.0.1, named ``localhost`` in its issuer URLs."""

    def __init__(
        self,
        work: Path,
        certificate: Path | None = None,
        key: Path | None = None,
        ca: Path | None = None,
        realms: tuple[str, ...] = ("test",),
    ) -> None:
        """Over HTTPS with this certificate and key (signed by ``ca``); without: plain http on
        loopback (`make loadtest`'s provider, which the service accepts only there)."""
        self.work = work
        self.certificate, self.key = certificate, key
        self.context = ssl.create_default_context(cafile=str(ca)) if ca else None
        self.realms = realms
        self.port = free_port()
        self.base = f"{'https' if certificate else 'http'}://localhost:{self.port}"
        self.log_path = work / "keycloak.log"
        self.proc: subprocess.Popen | None = None

    def issuer(self, realm: str = "test") -> str:
        return f"{self.base}/realms/{realm}"

    def start(self, timeout: float = 300) -> Keycloak:
        home = keycloak_home()
        imports = home / "data" / "import"
        shutil.rmtree(imports, ignore_errors=True)
        imports.mkdir(parents=True)
        realm = json.loads(REALM.read_text())
        for name in self.realms:  # --import-realm wants <realm>-realm.json
            (imports / f"{name}-realm.json").write_text(json.dumps({**realm, "realm": name}))
        env = {
            **os.environ,
            "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m",  # else it sizes its heap by the machine's memory
            "JAVA_OPTS_APPEND": "-XX:TieredStopAtLevel=1",  # starts faster; a test's load is light
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(home / "bin" / "kc.sh"),
                    "start",
                    "--optimized",
                    "--import-realm",
                    "--cache=local",  # one process: no cluster, no JGroups ports of its own
                    "--http-host=127.0.0.1",
                    *(
                        [
                            f"--https-port={self.port}",
                            f"--https-certificate-file={self.certificate}",
                            f"--https-certificate-key-file={self.key}",
                        ]
                        if self.certificate
                        else ["--http-enabled=true", f"--http-port={self.port}"]
                    ),
                    f"--hostname={self.base}",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # kc.sh and its java: one group to signal
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Keycloak exited with {self.proc.returncode}: {self.log()[-3000:]}")
            try:
                self.request("GET", f"/realms/{self.realms[-1]}/.well-known/openid-configuration")
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"Keycloak did not answer within {timeout} s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- as a calling service and its operator --------------------------------
    def request(
        self, method: str, path: str, body: Any = None, headers: dict | None = None, timeout: float = 30
    ) -> tuple[int, Any, Any]:
        """(status, headers, JSON body or None); HTTP errors are answers, not exceptions."""
        data = None
        headers = dict(headers or {})
        if isinstance(body, dict | list):
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            data, headers["Content-Type"] = body.encode(), "application/x-www-form-urlencoded"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as answer:  # nosec B310  # https:// or http://localhost, built here
                status, got, raw = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            status, got, raw = exc.code, exc.headers, exc.read()
        return status, got, json.loads(raw) if raw.strip() else None

    def token(self, realm: str = "test", client: str = CLIENT, secret: str = SECRET, scope: str | None = SCOPE) -> str:
        """An access token by the client-credentials grant, as a calling service gets one."""
        form = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        basic = b64encode(f"{client}:{secret}".encode()).decode()
        status, _, body = self.request(
            "POST",
            f"/realms/{realm}/protocol/openid-connect/token",
            urllib.parse.urlencode(form),
            {"Authorization": f"Basic {basic}"},
        )
        if status != 200:
            raise RuntimeError(f"token for {client} in {realm}: {status} {body}")
        return body["access_token"]

    def admin(self, realm: str, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
        """The admin API of a realm, as its kc-admin service account."""
        token = self.token(realm, ADMIN_CLIENT, ADMIN_SECRET, scope=None)
        return self.request(method, f"/admin/realms/{realm}{path}", body, {"Authorization": f"Bearer {token}"})

    def add_signing_key(self, realm: str, priority: int, private_pem: str | None = None) -> str:
        """A new RS256 key provider (generated by Keycloak, or this PEM's key); its kid. The
        highest priority signs new tokens; the others stay in the key set until removed."""
        config: dict = {"priority": [str(priority)], "algorithm": ["RS256"]}
        if private_pem is not None:
            config["privateKey"] = [private_pem]
        _, _, realm_doc = self.admin(realm, "GET", "")
        component = {
            "name": f"rs256-{priority}-{time.monotonic_ns()}",
            "providerId": "rsa" if private_pem else "rsa-generated",
            "providerType": KEY_PROVIDER,
            "parentId": realm_doc["id"],
            "config": config,
        }
        status, headers, body = self.admin(realm, "POST", "/components", component)
        if status != 201:
            raise RuntimeError(f"adding a key to {realm}: {status} {body}")
        provider = headers["Location"].rsplit("/", 1)[1]
        for key in self.admin(realm, "GET", "/keys")[2]["keys"]:
            if key.get("providerId") == provider and key.get("use") == "SIG":
                return key["kid"]
        raise RuntimeError(f"the key added to {realm} is not among its keys")

    def remove_signing_key(self, realm: str, kid: str) -> None:
        """Delete the provider of this key: it leaves the realm's key set."""
        for key in self.admin(realm, "GET", "/keys")[2]["keys"]:
            if key.get("kid") == kid:
                status, _, body = self.admin(realm, "DELETE", f"/components/{key['providerId']}")
                if status != 204:
                    raise RuntimeError(f"removing {kid} from {realm}: {status} {body}")
                return
        raise RuntimeError(f"no key {kid} in {realm}")

    # -- faults ------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        assert self.proc is not None, "start() first"
        os.killpg(self.proc.pid, sig)

    def freeze(self) -> None:
        """SIGSTOP: its sockets stay open and nothing answers, like a hung provider."""
        self.signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a frozen one must run to exit
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
