"""What a client already has and what it can take: ETags, If-None-Match, Accept-Encoding.

The ETag is the CRC-32 of the bytes of the answer, computed once per answer: the
stores' documents pass through untouched, so equal bytes are the same
representation, whichever store (or worker) they came from, and a changed
document keeps its tag only once in 2**32 changes. zlib's CRC-32 is the
cheapest digest in the standard library (about 0.3 us for a profile's 1.2 kB,
where BLAKE2b or MD5 take 1.3-1.8 us; the request's own cost: bench/README.md).
"""

from __future__ import annotations

import gzip
from zlib import crc32

OWS = b" \t"
TAG = b'"%08x"'  # a strong entity tag (RFC 9110 8.8.3): the CRC-32, hex, quoted
ETAG_LINE = b"ETag: " + TAG + b"\r\n"  # formatted straight from the CRC: one step less per answer


def etag(body: bytes) -> bytes:
    return TAG % crc32(body)


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
