"""What the ETag costs a request, measured in-process where the machine's noise is small.

First the digests the standard library offers, on a stored profile's bytes; then one id
lookup through the service's own request path (``connection.Conversation.step``: parse,
route, token, a store call, the ETag, the answer's bytes) over an in-memory store, in
the working tree and at an earlier commit (--against, default main), alternating. Each
figure is the best of many repeats: the least the work costs, which other load on the
machine can only add to. The whole service's CPU per request is ``make bench-ab``'s.

    .venv/bin/python bench/experiments/etag_cost.py                  # against main
    .venv/bin/python bench/experiments/etag_cost.py --against HEAD~1 --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import timeit
import zlib
from pathlib import Path

from testkit import ROOT

sys.path.insert(0, str(ROOT / "bench"))  # an experiment beside bench's harness: its A/B checkout
from ab import checkout

PROFILE = (
    '{"record_id":1,"name":"José Martinez","nickname":"shadowGecko","user_id":"jmartinez1","bio":"' + "x" * 1050 + '"}'
).encode()

# Run in a tree's own directory (its modules first on the path), printing µs per request.
STEP = """
import io, timeit
import settings
from connection import Conversation, Site
from metrics import Metrics
from service import Service, TokenKeeper
DOC = %r
class Store:
    serial = False
    class layout: token_key = "token"  # where the token is read from, as logged
    def get_profile(self, record_id): return DOC
    def read_token(self): return "token"
    def counters(self): return {}
tokens = TokenKeeper(Store(), 60)
tokens.read()
service = Service(Store(), tokens, Metrics(), b"{}")
request = b"GET /api/v1/id/1 HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer token\\r\\n\\r\\n"
class Writer:
    def send_now(self, data): return b""
    def send_all(self, data): pass
site = Site(service, settings.defaults())
def step():
    Conversation(io.BufferedReader(io.BytesIO(request)), Writer(), site).step()
print(min(timeit.repeat(step, number=20000, repeat=15)) / 20000 * 1e6)
"""


def per_call(fn, number: int = 200_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def step_cost(tree: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEP % PROFILE], cwd=tree, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", default="main", help="the commit to compare with (default main)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = p.parse_args(argv)
    print(f"digests of a {len(PROFILE):,}-byte profile, µs each (best of 7):")
    for name, fn in (
        ("zlib.crc32", lambda: zlib.crc32(PROFILE)),
        ("zlib.adler32", lambda: zlib.adler32(PROFILE)),
        ("md5", lambda: hashlib.md5(PROFILE, usedforsecurity=False).digest()),
        ("sha1", lambda: hashlib.sha1(PROFILE, usedforsecurity=False).digest()),
        ("blake2b-64", lambda: hashlib.blake2b(PROFILE, digest_size=8).digest()),
    ):
        print(f"  {name:13s} {per_call(fn):6.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        commit = checkout(args.against, Path(tmp))
        before: list[float] = []
        after: list[float] = []
        for i in range(args.rounds):
            for side in ((before, tmp), (after, str(ROOT)))[:: 1 if i % 2 == 0 else -1]:
                side[0].append(step_cost(side[1]))
        b, a = min(before), min(after)
        print(f"one id lookup in-process, µs (best of {args.rounds} rounds of 15 repeats):")
        print(f"  before ({commit}) {b:6.2f}   rounds {', '.join(f'{x:.2f}' for x in before)}")
        print(f"  after (the tree) {a:6.2f}   rounds {', '.join(f'{x:.2f}' for x in after)}")
        print(f"  after - before   {a - b:+6.2f} µs  ({a / b:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
