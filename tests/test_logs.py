"""logs: the stamp, and a secret masked as a whole, never the letters it shares with other words."""

from __future__ import annotations

import pytest

from logs import masked

pytestmark = pytest.mark.inprocess


@pytest.mark.parametrize(
    "secret, text, expected",
    [
        ("x", "UnAmbiguousTimeoutException near x", "UnAmbiguousTimeoutException near ***"),
        ("timeout", "unambiguous_timeout; connect timeout", "unambiguous_timeout; connect ***"),
        ("password", "the user name or password-reset", "the user name or password-reset"),
        ("s3cr3t-T0ken_9", "Bearer s3cr3t-T0ken_9, again s3cr3t-T0ken_9.", "Bearer ***, again ***."),
        ("", "nothing to mask", "nothing to mask"),
    ],
)
def test_a_secret_is_masked_as_a_whole(secret, text, expected):
    assert masked(text, secret) == expected
