#!/usr/bin/env python3
"""Instructions per request, ours against ours at an earlier commit: a measure a busy machine
cannot blur (bench/ab.py's req/s can, when other work shares the cores).

    .venv/bin/python bench/instructions.py [--against main] [--requests 1000]

Each side (the working tree, and --against's files) serves the embedded store in one process
under valgrind's callgrind, and one keep-alive client in the same process asks for ids one at
a time over loopback, exactly as a client of the service would. A run of N requests and one of
--base requests are counted; their difference over N - base is the instructions of one request,
server and client together, start-up cancelled out. The client's share is the same on both
sides, so the difference between the sides is the server's.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ab import checkout
from run import ROOT, seed, store_arguments

# Run at the root of the tree measured, so that it imports that tree's modules.
DRIVER = r"""
import socket, sys, threading
import settings
try:
    from stores import open_store
except ImportError:  # before open_store left store.py
    from store import open_store
from server import UserProfileServer
from service import TokenKeeper

db, count, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = settings.defaults({"USERPROFILE_DB": db, "ACCESS_LOG": "false"})
store = open_store(options)
tokens = TokenKeeper(store, 3600)
tokens.read()
server = UserProfileServer(("127.0.0.1", 0), store, tokens, options)
threading.Thread(target=server.serve_forever, daemon=True).start()
sock = socket.create_connection(("127.0.0.1", server.port))
auth = b"Authorization: Bearer " + tokens.token
buffer = b""
for i in range(requests):
    sock.sendall(b"GET /api/v1/id/%d HTTP/1.1\r\nHost: bench\r\n%s\r\n\r\n" % (i % count + 1, auth))
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:80]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(buffer) < length:
        buffer += sock.recv(65536)
    buffer = buffer[length:]
sock.close()
"""


def instructions(root: Path, python: str, db: str, count: int, requests: int) -> int:
    out = root / f"callgrind.{requests}.out"
    # -S: no site-packages, so no editable install's finder: the tree's modules and the standard library only.
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
    ]
    subprocess.run(command, cwd=root, check=True, capture_output=True, timeout=1800)
    totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(errors="replace"), re.M)
    if totals is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(totals.group(1))


def per_request(root: Path, args) -> float:
    (root / "_driver.py").write_text(DRIVER)
    base = instructions(root, args.python, args.db, args.count, args.base)
    full = instructions(root, args.python, args.db, args.count, args.requests)
    return (full - base) / (args.requests - args.base)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--against", default="HEAD~1", help="the commit to compare with (default HEAD~1)")
    p.add_argument("--requests", type=int, default=1000, help="requests of the long run (default 1000)")
    p.add_argument("--base", type=int, default=100, help="requests of the short run (default 100)")
    p.add_argument("--python", default=sys.executable)
    store_arguments(p)
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (tools/install_debs.sh valgrind)")
    seed(args.db, args.count, args.token)
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp:
        before, after = Path(tmp) / "before", Path(tmp) / "after"
        commit = checkout(args.against, before)
        after.mkdir()
        for path in [*ROOT.glob("*.py"), ROOT / "openapi.json"]:
            shutil.copy2(path, after / path.name)
        figures = {side: per_request(root, args) for side, root in (("before", before), ("after", after))}
    print(f"instructions per request ({args.requests - args.base} requests, server and client, callgrind):")
    print(f"  before ({args.against}, {commit}): {figures['before']:,.0f}")
    print(f"  after (the working tree):  {figures['after']:,.0f}")
    print(f"  after/before: {figures['after'] / figures['before']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
