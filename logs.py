"""The service's log lines, stamped one way: events on stderr (``log``), and the stamp the
access log's lines start with (``stamp``). Never a token or a password in either."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime


def stamp() -> str:
    """Now, in UTC to the millisecond: 2026-12-03T07:43:37.123+00:00."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def log(message: str) -> None:
    """One service event on stderr, one line."""
    sys.stderr.write(f"{stamp()} {message}\n")
    sys.stderr.flush()


def masked(text: str, secret: str) -> str:
    """``text`` with every whole occurrence of ``secret`` as ``***``, never its characters inside
    longer words: a token ``x`` leaves ``Exception`` whole. Better still, a message is never made
    with a secret (a password reaches none)."""
    if not secret:
        return text
    return re.sub(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", "***", text)
