"""What a client already has and what it can take: ETags, If-None-Match, Accept-Encoding.

The ETag is computed from the bytes of the answer, once per answer: the stores'
documents pass through untouched, so equal bytes are the same representation,
whichever store they came from. CRC-32 (zlib, in C) costs well under a
microsecond for a profile (bench/README.md has the A/B); the length is part of
the tag too, so two versions of a document collide only when both agree.
"""

from __future__ import annotations

import gzip
import zlib

OWS = b" \t"


def etag(body: bytes) -> bytes:
    """A strong entity tag, quoted (RFC 9110 8.8.3): the body's length and CRC-32, in hex."""
    return b'"%x-%08x"' % (len(body), zlib.crc32(body))


def none_match(header: bytes, tag: bytes) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (or is ``*``): the client has this representation.

    A list of tags, each strong or weak; GET compares them weakly (RFC 9110 13.1.2), so
    ``W/"x"`` matches ``"x"``.
    """
    if tag not in header:  # nearly always the answer for a stale or foreign tag: no parsing
        return header.strip(OWS) == b"*"
    for item in header.split(b","):
        item = item.strip(OWS)
        if item.startswith(b"W/"):
            item = item[2:]
        if item == tag:
            return True
    return False


def accepts_gzip(header: bytes | None) -> bool:
    """Whether ``Accept-Encoding`` lets the answer be gzip (RFC 9110 12.5.3): named, or ``*``,
    with a q-value above 0; ``gzip;q=0`` refuses it whatever ``*`` says."""
    if not header:
        return False
    star = False
    for item in header.lower().split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip(OWS)
        if coding in (b"gzip", b"x-gzip"):
            return qvalue(params) > 0
        if coding == b"*":
            star = qvalue(params) > 0
    return star


def qvalue(params: bytes) -> float:
    """The q parameter of a list item (1 when absent); an unreadable one counts as 0."""
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip(OWS) == b"q":
            try:
                q = float(value.strip(OWS))
            except ValueError:
                return 0.0
            return q if 0 <= q <= 1 else 0.0
    return 1.0


def compress(body: bytes) -> bytes:
    """gzip, with no time stamp so the same body always compresses to the same bytes (and ETag)."""
    return gzip.compress(body, compresslevel=6, mtime=0)
