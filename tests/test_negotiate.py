"""negotiate: ETags, If-None-Match and Accept-Encoding from bytes, as RFC 9110 reads them."""

from __future__ import annotations

import gzip
import zlib

import pytest

from negotiate import accepts_gzip, compress, etag, none_match

pytestmark = pytest.mark.inprocess

TAG = etag(b'[{"record_id":1}]')


def test_the_etag_is_the_quoted_crc32_of_the_bytes():
    assert b'"%08x"' % zlib.crc32(b'[{"record_id":1}]') == TAG
    assert etag(b"[1]") != etag(b"[2]") and etag(b"") == b'"00000000"'


@pytest.mark.parametrize(
    "header, matches",
    [
        (TAG, True),
        (b"W/" + TAG, True),  # weak comparison for GET (RFC 9110 13.1.2)
        (b'"other", ' + TAG, True),
        (b'"other",' + TAG + b' ,"third"', True),
        (b'"other"\t,\tW/' + TAG, True),
        (b"*", True),
        (b" * ", True),
        (b'"other"', False),
        (b'"other", *', False),  # * is the whole field or nothing
        (TAG[:-1], False),  # an unclosed tag
        (b'"x' + TAG[1:], False),  # a tag that contains ours
        (b"", False),
    ],
)
def test_if_none_match(header, matches):
    assert none_match(header, TAG) is matches


@pytest.mark.parametrize(
    "header, gzip_ok",
    [
        (None, False),
        (b"", False),
        (b"gzip", True),
        (b"GZIP", True),
        (b"x-gzip", True),
        (b"deflate, gzip;q=1.0, br", True),
        (b"gzip;q=0.001", True),
        (b"gzip;q=0", False),
        (b"gzip; q=0.0", False),
        (b"*", True),
        (b"*;q=0", False),
        (b"gzip;q=0, *", False),  # refused by name, whatever * says
        (b"br, deflate", False),
        (b"identity", False),
        (b"gzip;q=abc", False),  # an unreadable q-value: not taken as consent
        (b"gzip;q=2", False),
    ],
)
def test_accept_encoding(header, gzip_ok):
    assert accepts_gzip(header) is gzip_ok


def test_gzip_is_the_same_bytes_each_time_and_decompresses():
    body = b'{"openapi":"3.0.3"}' * 100
    assert compress(body) == compress(body)  # no time stamp: one ETag per body
    assert gzip.decompress(compress(body)) == body
