"""What every layer answers with: the statuses, ``HTTPError``, ``Answer`` and the error answer.

The parser (httpparse.py), the service (service.py) and the connection (connection.py) all
build their answers from here, so that none of them reaches up into a layer above it for a
400, a 503 or a status line.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import routes

REASONS = {
    200: "OK",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}
STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}
JSON = b"application/json"
ERROR_HEADERS = b"Cache-Control: %s\r\n" % routes.NO_STORE.encode()  # an error is of its moment


class HTTPError(Exception):
    """An answer other than 200, with the message for the JSON error body."""

    def __init__(self, status: int, message: str | None = None, close: bool = False, extra: bytes = b""):
        super().__init__(status)
        self.status = status
        self.message = message or REASONS[status]
        self.close = close  # the connection can no longer be trusted to frame requests
        self.extra = extra  # more header lines


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: bytes = JSON
    extra: bytes = b""  # more header lines
    close: bool = False  # the connection must close after this answer


def error_body(message: str) -> bytes:
    return json.dumps({"status": "failure", "message": {"error": message}}, separators=(",", ":")).encode()


def refusal(err: HTTPError) -> Answer:
    """An error's answer: its JSON body, never cached."""
    return Answer(err.status, error_body(err.message), extra=ERROR_HEADERS + err.extra, close=err.close)


def unavailable(retry_after: int, message: str | None = None) -> HTTPError:
    """A 503, with when to try again (the RETRY_AFTER_SECONDS setting)."""
    return HTTPError(503, message, extra=b"Retry-After: %d\r\n" % retry_after)
