#!/usr/bin/env python3
"""Instructions per request, ours against ours at an earlier commit: a measure a busy machine
cannot blur (bench/ab.py's req/s can, when other work shares the cores).

    .venv/bin/python bench/instructions.py [--against main] [--requests 1000]
    .venv/bin/python bench/instructions.py --jwt    # the tree with a JWT against the tree with the static token

Each side (the working tree, and --against's files) serves the embedded store in one process
under valgrind's callgrind, and one keep-alive client in the same process asks for ids one at
a time over loopback, exactly as a client of the service would. A run of N requests and one of
--base requests are counted; their difference over N - base is the instructions of one request,
server and client together, start-up cancelled out. The client's share is the same on both
sides, so the difference between the sides is the server's.

--after-env NAME=VALUE sets a setting of the working tree's side alone, and --otlp-collector
starts an OpenTelemetry Collector its traces are exported to (its exporter's thread counted
with the rest, and what is queued sent before the count ends): the same tree with export on.

    .venv/bin/python bench/instructions.py --against HEAD --otlp-collector --after-env OTEL_TRACES_SAMPLER_ARG=0.01
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ab import checkout, start_collector
from measure import seed, store_arguments

from testkit import ROOT

# What the service reads beside its modules: the API description, and the version (buildinfo.py).
SERVED = (ROOT / "openapi.json", ROOT / "pyproject.toml")
# Run at the root of the tree measured, so that it imports that tree's modules.
DRIVER = r"""
import json, os, socket, sys, threading
import settings
try:
    from stores import open_store
except ImportError:  # before open_store left store.py
    from store import open_store
from server import UserProfileServer
from service import TokenKeeper

db, count, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
extra = dict(pair.split("=", 1) for pair in sys.argv[4:])  # --after-env, the working tree's side only
mode = extra.pop("BENCH_TOKEN", "")  # --jwt: "jwt", a cached JWT; "long", a static token as long as it
os.environ.update(extra)  # also for what reads the environment itself (the OpenTelemetry SDK's OTEL_BSP_*)
# No recycling by age: under valgrind a run outlasts MAX_CONNECTION_AGE_SECONDS, and this client
# keeps one connection.
base = {"USERPROFILE_DB": db, "ACCESS_LOG": "false", "MAX_CONNECTION_AGE_SECONDS": "0"}
options = settings.defaults({**base, **extra})
store = open_store(options)
tokens = TokenKeeper(store, 3600)
tokens.read()
if mode or extra:
    with open("_site.json") as f:
        sys.path.extend(json.load(f))  # -S left site-packages out: PyJWT and the optional packages are there
kwargs = {}
token = tokens.token
if mode == "jwt":  # the RS256 token in jwt.json (made once), verified once, then cached
    import auth
    from jwks import parse_key_set
    with open("jwt.json") as f:  # made once: signing and key making cost a count that varies run to run
        made = json.load(f)
    jwt_options = {"AUTH_MODE": "jwt", "AUTH_ISSUER": made["issuer"], "AUTH_AUDIENCE": made["audience"]}
    options = settings.defaults({**base, **jwt_options, **extra})
    verifier = auth.verifier(options)
    verifier.keys.keys, verifier.keys.fetched = parse_key_set(made["jwks"], verifier.keys.allowed), True
    token = made["token"].encode()
    kwargs["verifier"] = verifier
elif mode == "long":  # a static token as long as the JWT, to tell length from verification
    with open("jwt.json") as f:
        tokens.token = token = b"t" * len(json.load(f)["token"])
traces = None
if extra:
    import userprofile_service
    traces = kwargs["traces"] = userprofile_service.traces_for(options)
server = UserProfileServer(("127.0.0.1", 0), store, tokens, options, **kwargs)
threading.Thread(target=server.serve_forever, daemon=True).start()
sock = socket.create_connection(("127.0.0.1", server.port))
auth = b"Authorization: Bearer " + token
buffer = b""
for i in range(requests):
    sock.sendall(b"GET /api/v1/id/%d HTTP/1.1\r\nHost: bench\r\n%s\r\n\r\n" % (i % count + 1, auth))
    while b"\r\n\r\n" not in buffer:
        got = sock.recv(65536)
        assert got, "the server closed the connection"
        buffer += got
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:80]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buffer) < length:
        buffer += sock.recv(65536)
    buffer = buffer[length:]
sock.close()
if traces is not None:
    traces.close()  # what is queued is sent, and counted
"""


def instructions(root: Path, python: str, db: str, count: int, requests: int, extra: list[str]) -> int:
    out = root / f"callgrind.{requests}{''.join(extra)}.out"
    # -S: no site-packages, so no editable install's finder: the tree's modules and the standard library only
    # (a side with settings of its own, or a JWT, takes the packages it needs from _site.json).
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        python,
        "-S",
        str(root / "_driver.py"),
        db,
        str(count),
        str(requests),
        *extra,
    ]
    subprocess.run(command, cwd=root, check=True, capture_output=True, timeout=1800)
    totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if totals is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(totals.group(1))


def per_request(root: Path, args, extra: list[str]) -> float:
    (root / "_driver.py").write_text(DRIVER)
    # -S leaves site-packages out; a side with settings of its own may need the optional packages there.
    (root / "_site.json").write_text(json.dumps([p for p in sys.path if p.endswith("site-packages")]))
    base = instructions(root, args.python, args.db, args.count, args.base, extra)
    full = instructions(root, args.python, args.db, args.count, args.requests, extra)
    return (full - base) / (args.requests - args.base)


def made_jwt() -> dict:
    """An issuer, its key set and a token it signed, for the --jwt driver."""
    from testkit.issuer import AUDIENCE, SigningKey, claims

    key, issuer = SigningKey("RS256"), "https://issuer.example"
    token = key.sign(claims(issuer, lifetime=3600))
    return {"issuer": issuer, "audience": AUDIENCE, "jwks": {"keys": [key.jwk()]}, "token": token}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", default="HEAD~1", help="the commit to compare with (default HEAD~1)")
    p.add_argument("--requests", type=int, default=1000, help="requests of the long run (default 1000)")
    p.add_argument("--base", type=int, default=100, help="requests of the short run (default 100)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument(
        "--jwt", action="store_true", help="the working tree with a cached JWT against it with the static token"
    )
    p.add_argument(
        "--after-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the working tree's side only",
    )
    p.add_argument(
        "--otlp-collector", action="store_true", help="the working tree's side exports its traces to a collector"
    )
    store_arguments(p)
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (tools/install_debs.sh valgrind)")
    seed(args.db, args.count, args.token)
    if args.jwt:
        with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
            tree = Path(tmp)
            for path in [*ROOT.glob("*.py"), *SERVED]:
                shutil.copy2(path, tree / path.name)
            (tree / "jwt.json").write_text(json.dumps(made_jwt()))
            token, jwt = per_request(tree, args, []), per_request(tree, args, ["BENCH_TOKEN=jwt"])
            long = per_request(tree, args, ["BENCH_TOKEN=long"])
        print(f"instructions per request ({args.requests - args.base} requests, server and client, callgrind):")
        print(f"  the static token: {token:,.0f}\n  a cached RS256 JWT: {jwt:,.0f}  ({jwt / token:.4f}x)")
        print(f"  a static token as long as the JWT: {long:,.0f}  (JWT / it: {jwt / long:.4f}x)")
        return 0
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        commit = checkout(args.against, before)
        after.mkdir()
        for path in [*ROOT.glob("*.py"), *SERVED]:
            shutil.copy2(path, after / path.name)
        extra = {"before": [], "after": list(args.after_env)}
        collector = start_collector(Path(tmp)) if args.otlp_collector else None
        if collector is not None:
            extra["after"].append(f"OTEL_EXPORTER_OTLP_ENDPOINT={collector.endpoint}")
        try:
            figures = {
                side: per_request(root, args, extra[side]) for side, root in (("before", before), ("after", after))
            }
        finally:
            if collector is not None:
                collector.stop()
    print(f"instructions per request ({args.requests - args.base} requests, server and client, callgrind):")
    print(f"  before ({args.against}, {commit}): {figures['before']:,.0f}")
    settings_of_after = "".join(f", {pair}" for pair in extra["after"])
    print(f"  after (the working tree{settings_of_after}):  {figures['after']:,.0f}")
    print(f"  after/before: {figures['after'] / figures['before']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
