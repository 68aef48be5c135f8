"""What a JWT costs against the static token (docs/decisions/2026-12-06-jwt-cost.md).

1. CPU per request of GET /api/v1/id/<id> with a JWT (the verified-token cache warm) against
   the static token, same tree, in one run: the two alternate round by round (which goes first
   swapped each round), each server fresh on core 0, wrk on core 1 (bench/run.py's pieces).
   On the embedded store, and with --couchbase on one CAVES cluster.
2. One cold verification (accesstoken.Verifier.verify, the cache's miss path) for RS256,
   ES256, EdDSA and PS256, in µs, in this process.
3. A stream of distinct RS256 tokens (a token per request: every one a cache miss) against
   the static token, over the wire: what a token-per-request client costs.

The JWTs are signed by a key this script makes, served as a key set on loopback
(testkit.issuer.LoopbackIssuer), as the tests' own issuer.

    .venv/bin/python bench/jwt_cost.py                     # embedded store, 6 rounds
    .venv/bin/python bench/jwt_cost.py --couchbase         # on CAVES
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import BENCH, Server, seed, start_caves, store_arguments, wait_quiet, wrk

import settings
from auth import verifier
from testkit.issuer import LoopbackIssuer, SigningKey, claims

SIDES = ("token", "jwt")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6, help="rounds of the warm A/B (default 6)")
    p.add_argument("--conns", type=int, default=32, help="connections (default 32)")
    p.add_argument("--duration", type=float, default=6, help="seconds measured per side and round (default 6)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of discarded load first (default 2)")
    p.add_argument("--settle", type=float, default=10, help="wait up to this for an idle machine (default 10)")
    p.add_argument("--distinct", type=int, default=20000, help="distinct tokens in the stream (default 20000)")
    p.add_argument("--couchbase", action="store_true", help="serve from one CAVES cluster (needs .tools/bin/gocaves)")
    store_arguments(p)
    return p.parse_args(argv)


def measure(impl: str, env: dict, token: str, args, log_dir: Path, store_pid: int | None, script: str | None = None):
    server = Server(impl, env, log_dir)
    try:
        server.wait_ready(token)
        wrk(server, args.conns, args.warmup, token, args.count, store_pid, script=script)
        wait_quiet(args.settle)
        return wrk(server, args.conns, args.duration, token, args.count, store_pid, script=script)
    finally:
        server.stop()


def cold_microseconds(issuer: LoopbackIssuer, keys: dict[str, SigningKey], n: int = 400) -> dict[str, float]:
    """One verification per algorithm, the miss path, µs (the median of 5 batches of n)."""
    options = settings.defaults(issuer.env())
    check = verifier(options)
    assert check is not None
    check.keys.fetch()
    out = {}
    for alg, key in keys.items():
        token = key.sign(claims(issuer.url, lifetime=3600)).encode()
        batches = []
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(n):
                check.verify(token)
            batches.append((time.perf_counter() - began) / n * 1e6)
        out[alg] = statistics.median(batches)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    raw = BENCH / "results" / "raw" / "jwt"
    raw.mkdir(parents=True, exist_ok=True)
    impl, env, store_pid, caves = "ours", {"USERPROFILE_DB": args.db}, None, None
    if args.couchbase:
        envs: dict[str, dict] = {}
        caves = start_caves(args, envs)
        impl, env, store_pid, static = "ours-cb", envs["ours-cb"], caves.proc.pid, args.token
    else:
        static = seed(args.db, args.count, args.token)
    keys = {alg: SigningKey(alg) for alg in ("RS256", "ES256", "EdDSA", "PS256")}
    try:
        with LoopbackIssuer(list(keys.values())) as issuer:
            jwt_env = {**env, **issuer.env()}
            token = keys["RS256"].sign(claims(issuer.url, lifetime=3600))
            print(f"1. warm: {args.rounds} rounds of {args.duration:g} s at {args.conns} connections, {impl}")
            runs: dict[str, list[dict]] = {side: [] for side in SIDES}
            for n in range(args.rounds):
                for side in SIDES if n % 2 == 0 else SIDES[::-1]:
                    side_env, side_token = (env, static) if side == "token" else (jwt_env, token)
                    run = measure(impl, side_env, side_token, args, raw, store_pid)
                    runs[side].append(run)
                    print(
                        f"  round {n + 1} {side:5} {run['rps']:9,.0f} req/s {run['server_us_per_request']:6.1f} us/req"
                        f"  p99 {run['p99_ms']:6.2f} ms  errors {run['errors']}{'  (noisy)' if run['noisy'] else ''}",
                        flush=True,
                    )
            ratios = sorted(
                j["server_us_per_request"] / t["server_us_per_request"]
                for j, t in zip(runs["jwt"], runs["token"], strict=True)
            )
            for side in SIDES:
                us = statistics.median(r["server_us_per_request"] for r in runs[side])
                rps = statistics.median(r["rps"] for r in runs[side])
                print(f"  {side:5} median {rps:9,.0f} req/s {us:6.1f} us/req")
            print(
                f"  jwt / token, CPU per request, per round: median {statistics.median(ratios):.3f}x"
                f" ({ratios[0]:.3f}-{ratios[-1]:.3f})"
            )

            print("2. cold: one verification (the cache's miss path), in this process")
            for alg, us in cold_microseconds(issuer, keys).items():
                print(f"  {alg:6} {us:7.1f} us")

            print(f"3. a stream of {args.distinct:,} distinct RS256 tokens, every request a miss")
            with tempfile.TemporaryDirectory() as tmp:
                tokens = Path(tmp) / "tokens.txt"
                signer = keys["RS256"]
                stream = (signer.sign(claims(issuer.url, lifetime=3600)) for _ in range(args.distinct))
                tokens.write_text("\n".join(stream))
                stream_env = {**jwt_env, "AUTH_CACHE_SIZE": "100"}
                script = str(BENCH / "distinct_tokens.lua")
                os.environ["TOKENS_FILE"] = str(tokens)
                stream = measure(impl, stream_env, token, args, raw, store_pid, script)
            cached = statistics.median(r["server_us_per_request"] for r in runs["jwt"])
            print(
                f"  {stream['rps']:9,.0f} req/s {stream['server_us_per_request']:6.1f} us/req"
                f"  p99 {stream['p99_ms']:6.2f} ms  errors {stream['errors']}"
                f"  ({stream['server_us_per_request'] - cached:+.1f} us per request over a cached token)"
            )
    finally:
        if caves:
            caves.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
