#!/usr/bin/env python3
"""Generate realistic random user profiles with images and load them, with the
service token, into the store the environment selects (embedded SQLite, or
Couchbase when COUCHBASE_HOST is set).

Deterministic for a given --seed: the same ids get the same documents. It never
overwrites what a store holds unless told: before writing anything it counts the
documents already under the keys it would write, and refuses when there are any
(``--overwrite`` rewrites them, ``--if-empty`` loads only into an empty store).
``--rotate-token`` replaces the service token alone (docs/data-model.md).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib.util
import os
import random
import secrets
import struct
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from typing import TextIO

import settings
from store import Layout, LoadableStore, StoreUnavailable
from stores import open_store

BATCH = 500

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Charles Karen Christopher Lisa Daniel Nancy Matthew Betty Anthony Margaret "
    "Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin "
    "Amanda Brian Dorothy George Melissa Timothy Deborah Ana Wei Priya Hiroshi Fatima Olga Mateo Aisha Lars "
    "Chloé Zoë José"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Kowalski Müller O'Brien Yamamoto Patel"
).split()
ADJECTIVES = (
    "swift brave quiet lucky clever mighty happy sunny stormy silver golden crimson shadow frosty wild "
    "cosmic rusty jolly sleepy fuzzy electric lunar solar atomic mellow noble rapid tiny giant lazy"
).split()
ANIMALS = (
    "fox owl wolf bear hawk otter lynx raven tiger panda koala falcon badger moose bison heron "
    "gecko cobra eagle shark whale squid crane viper yak llama puma mole newt"
).split()
STREETS = (
    "Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Ridge River Church Spring Highland "
    "Forest Meadow Willow Jackson Lincoln Madison Franklin Chestnut Walnut"
).split()
SUFFIXES = ("St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way")
CITIES = (
    ("Austin", "TX", "787"),
    ("Denver", "CO", "802"),
    ("Portland", "OR", "972"),
    ("Boston", "MA", "021"),
    ("Atlanta", "GA", "303"),
    ("Chicago", "IL", "606"),
    ("Seattle", "WA", "981"),
    ("Phoenix", "AZ", "850"),
    ("Raleigh", "NC", "276"),
    ("Madison", "WI", "537"),
    ("Columbus", "OH", "432"),
    ("Nashville", "TN", "372"),
    ("San Diego", "CA", "921"),
    ("Miami", "FL", "331"),
    ("Omaha", "NE", "681"),
    ("Boise", "ID", "837"),
)
DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    """A truecolour PNG, made with the standard library, from rows of RGB bytes."""
    assert len(rows) == height and all(len(row) == 3 * width for row in rows)
    pixels = b"".join(b"\x00" + row for row in rows)  # filter type 0 before each row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(pixels, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def avatar(rng: random.Random) -> bytes:
    """A 40x40 identicon: a mirrored 5x5 grid of 8-pixel cells in one colour."""
    colour = bytes((rng.randrange(40, 200), rng.randrange(40, 200), rng.randrange(40, 200))) * 8
    background = bytes((240, 240, 240)) * 8
    rows = []
    for _ in range(5):
        cells = [rng.random() < 0.5 for _ in range(3)]
        row = b"".join(colour if on else background for on in cells + cells[1::-1])  # columns 0 1 2 1 0
        rows += [row] * 8
    return png(40, 40, rows)


def nickname_pool(rng: random.Random, count: int) -> list[str]:
    """Fewer nicknames than people, so a nickname lookup often finds several."""
    pool = [a + b.capitalize() for a in ADJECTIVES for b in ANIMALS]
    rng.shuffle(pool)
    return pool[: max(8, min(len(pool), count // 3))]


def profile(rng: random.Random, record_id: int, nicknames: list[str]) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, state, zip_prefix = rng.choice(CITIES)
    born = datetime.date(1950, 1, 1) + datetime.timedelta(days=rng.randrange(365 * 55))
    plain_last = "".join(c for c in last.lower() if c.isalpha() and c.isascii())
    plain_first = "".join(c for c in first.lower() if c.isalpha() and c.isascii())
    return {
        "record_id": record_id,
        "name": f"{first} {last}",
        "nickname": rng.choice(nicknames),
        "picture": record_id,
        "user_id": f"{plain_first[:1]}{plain_last}{record_id}",  # the id suffix keeps it unique
        "email": f"{plain_first}.{plain_last}{record_id}@{rng.choice(DOMAINS)}",
        "email_verified": rng.random() < 0.8,
        "first_name": first,
        "last_name": last,
        "address": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}",
        "city": city,
        "state": state,
        "zip_code": f"{zip_prefix}{rng.randrange(100):02d}",
        "phone": f"({rng.randrange(201, 989)}) 555-{rng.randrange(10000):04d}",
        "date_of_birth": born.isoformat(),
    }


def image(rng: random.Random, record_id: int) -> dict:
    return {"record_id": record_id, "type": "png", "image": base64.b64encode(avatar(rng)).decode()}


SHAPES = ("default", "blog")


def documents(shape: str, count: int, seed: int, images: int, layout: Layout) -> Iterator[tuple[dict, dict | None]]:
    """(profile, image) of a shape (``--shape``: this module's, or the blog generator's,
    ``blogshape.py``) for ids 1..count; no image document past id ``images``."""
    if shape == "blog":
        import blogshape  # its images need Pillow: imported for this shape only

        made = blogshape.generate(count, seed, layout.images)
    else:
        made = generate(count, seed)
    for prof, img in made:
        yield prof, img if prof["record_id"] <= images else None


def generate(count: int, seed: int) -> Iterator[tuple[dict, dict]]:
    """(profile, image) for ids 1..count; the same for the same seed and count."""
    rng = random.Random(seed)
    nicknames = nickname_pool(rng, count)
    for record_id in range(1, count + 1):
        # One generator per record: record N does not depend on how many came before it.
        record_rng = random.Random(f"{seed}:{record_id}")
        yield profile(record_rng, record_id, nicknames), image(record_rng, record_id)


class Progress:
    """A progress bar on a terminal; nothing when output is not a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.stream = total, stream
        self.enabled = stream.isatty()

    def update(self, done: int) -> None:
        if self.enabled:
            filled = 30 * done // max(self.total, 1)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} profiles")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def load(store: LoadableStore, documents: Iterator[tuple[dict, dict | None]], count: int) -> float:
    """Write the ``count`` profiles and their images (None: no image document); return
    documents written per second. Each is keyed ``<collection>:<record_id>``."""
    layout = store.layout
    progress = Progress(count)
    started = time.monotonic()
    profiles: list[tuple[str, dict]] = []
    images: list[tuple[str, dict]] = []
    done = written = 0
    for prof, img in documents:
        profiles.append((f"{layout.profiles}:{prof['record_id']}", prof))
        if img is not None:
            images.append((f"{layout.images}:{img['record_id']}", img))
        if len(profiles) == BATCH:
            store.upsert(layout.profiles, profiles)
            store.upsert(layout.images, images)
            done += len(profiles)
            written += len(profiles) + len(images)
            profiles, images = [], []
            progress.update(done)
    if profiles:
        store.upsert(layout.profiles, profiles)
        store.upsert(layout.images, images)
        done += len(profiles)
        written += len(profiles) + len(images)
        progress.update(done)
    progress.finish()
    return written / max(time.monotonic() - started, 1e-9)


def occupied(store: LoadableStore, writes: dict[str, int], token: str | None) -> dict[str, int]:
    """The documents already under the keys a load would write, by collection (none: nothing to
    overwrite): ids 1..N of each collection in ``writes``, and the token's when another is stored."""
    found: dict[str, int] = {}
    for collection, count in writes.items():
        for first in range(1, count + 1, BATCH):
            keys = [f"{collection}:{n}" for n in range(first, min(first + BATCH, count + 1))]
            found[collection] = found.get(collection, 0) + store.existing(collection, keys)
    stored = store.read_token()
    found[store.layout.auth] = int(token is not None and stored is not None and token != stored)
    return {collection: n for collection, n in found.items() if n}


def refusal(found: dict[str, int]) -> str:
    listed = ", ".join(f"{n} in {collection}" for collection, n in found.items())
    return (
        f"loaddata: the store already holds documents under the keys this load would write ({listed}); "
        "nothing was written. --overwrite replaces them, --if-empty loads only into an empty store, "
        "--rotate-token replaces the token alone"
    )


def rotate_token(store: LoadableStore, token: str | None) -> str:
    """Store a new service token (``token``, else a generated one) in place of the one in force:
    the service reads it within TOKEN_REFRESH_SECONDS, and refuses the old one from then on."""
    new = token or secrets.token_urlsafe(24)
    if new == store.read_token():
        raise ValueError("--rotate-token: that token is already the one in force")
    store.upsert(store.layout.auth, [(store.layout.token_key, {"token": new})])
    return new


def show_token(token: str) -> None:
    port = os.environ.get("SERVICE_PORT", settings.BY_NAME["port"].default)
    print(f"token: {token}")
    print(f'try:   curl -H "Authorization: Bearer {token}" http://localhost:{port}/api/v1/id/1')


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Generate and load user profiles (see README.md).",
        epilog=settings.environment_only(settings.STORES),
    )
    p.add_argument("--count", type=int, default=10000, help="profiles to generate, ids 1..N (default %(default)s)")
    p.add_argument("--token", help="the service token to store (default: keep the stored one, or generate one)")
    p.add_argument(
        "--seed", type=int, default=1, help="random seed: the same seed gives the same data (default %(default)s)"
    )
    p.add_argument(
        "--shape",
        choices=SHAPES,
        default="default",
        help="the data's shape: this loader's (PNG identicons), or the blog generator's (blogshape.py: "
        "~260 nicknames, JPEG 2000 images labelled jpeg; needs Pillow)",
    )
    p.add_argument(
        "--images",
        type=int,
        help="image documents for ids 1..N only (default: one per profile); the blog shape's are ~72 kB each",
    )
    p.add_argument("--if-empty", action="store_true", help="load only when the store holds no profiles")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace documents already under the keys written (without it the load refuses and writes nothing)",
    )
    p.add_argument(
        "--rotate-token",
        action="store_true",
        help="only replace the service token (--token, else a new one); the service takes it within "
        "TOKEN_REFRESH_SECONDS; printed only with --show-token",
    )
    p.add_argument(
        "--show-token",
        action="store_true",
        help="print the token in force and a curl line to try it, even when not generated",
    )
    # The store's settings (settings.STORES) as flags and environment variables, as the service has them.
    store_flags = p.add_argument_group("the store (each flag also its environment variable, as for the service)")
    settings.add_flags(store_flags, settings.STORES, os.environ)
    args = settings.finish(p, p.parse_args(argv), settings.STORES)
    if args.count < 0:
        p.error("--count must be 0 or more")
    images = args.count if args.images is None else min(args.images, args.count)
    if images < 0:
        p.error("--images must be 0 or more")
    if args.shape == "blog" and images and importlib.util.find_spec("PIL") is None:
        p.error("--shape blog writes JPEG 2000 images with Pillow: pip install pillow (or --images 0)")
    if args.rotate_token and (args.if_empty or args.overwrite):
        p.error("--rotate-token writes the token alone: not with --if-empty or --overwrite")

    store = open_store(settings.with_defaults(args))
    try:
        store.create_schema()
        if args.rotate_token:
            rotated = rotate_token(store, args.token)
            print("token rotated: the service refuses the old one within TOKEN_REFRESH_SECONDS")
            if args.show_token:
                show_token(rotated)
            return 0
        existing = store.count(store.layout.profiles) if args.if_empty else 0
        writes = {store.layout.profiles: args.count, store.layout.images: images} if not existing else {}
        found = {} if args.overwrite else occupied(store, writes, args.token)
        if found:
            print(refusal(found), file=sys.stderr)
            return 1
        if existing:
            print(f"the store already holds {existing} profiles; not loading")
        else:
            made = documents(args.shape, args.count, args.seed, images, store.layout)
            rate = load(store, made, args.count)
            print(f"loaded {args.count} profiles and {images} images ({rate:,.0f} documents/s)")
        token, generated = args.token, False
        if token is None:
            token = store.read_token()
        if token is None:
            token, generated = secrets.token_urlsafe(24), True
        if token != store.read_token():
            store.upsert(store.layout.auth, [(store.layout.token_key, {"token": token})])
        if generated and not args.show_token:
            print(f"token: {token}")
        if args.show_token:
            show_token(token)
    except ValueError as exc:
        print(f"loaddata: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"loaddata: the store is not answering: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
