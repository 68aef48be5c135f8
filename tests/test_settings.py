"""settings: one table of every setting, the options built from it, and the
documented configuration table (docs/configuration.md), which must be the same table."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import settings
from testkit import ROOT

pytestmark = pytest.mark.inprocess


def test_defaults_come_from_the_table_typed():
    options = settings.defaults()
    for s in settings.SETTINGS:
        value = getattr(options, s.name)
        assert value == (s.type(s.default) if s.default is not None else None), s.env
    assert options.port == 8080 and options.access_log is True and options.couchbase_tls is False


def test_flags_win_over_the_environment_which_wins_over_defaults():
    env = {"SERVICE_PORT": "9001", "WRITE_TIMEOUT_SECONDS": "3.5", "ACCESS_LOG": "off", "COUCHBASE_PASSWORD": "pw"}
    options = settings.load([], env)
    assert (options.port, options.write_timeout, options.access_log, options.couchbase_password) == (
        9001,
        3.5,
        False,
        "pw",
    )
    options = settings.load(["--port", "9002", "--access-log"], env)
    assert (options.port, options.access_log) == (9002, True)


def test_the_password_has_no_flag():
    assert settings.BY_NAME["couchbase_password"].flag is None
    with pytest.raises(SystemExit):
        settings.load(["--couchbase-password", "x"], {})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SERVICE_PORT": "eighty"}, "--port: invalid int value: 'eighty'"),
        ({"ACCESS_LOG": "maybe"}, "ACCESS_LOG: invalid boolean value: 'maybe'"),
        ({"WORKERS": "0"}, "--workers must be at least 1"),
        ({"WRITE_TIMEOUT_SECONDS": "0"}, "--write-timeout must be at least 0.01"),
    ],
)
def test_a_bad_value_is_a_clear_error_naming_the_setting(env, message):
    result = subprocess.run(
        [sys.executable, "-c", "import settings; settings.load()"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_stores_settings_are_the_loaders_options():
    names = {s.name for s in settings.STORES}
    assert names == {s.name for s in settings.SETTINGS if s.env.startswith(("COUCHBASE_", "SQLITE_"))} | {"db"}


def test_the_documented_configuration_table_is_this_table():
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = [line for line in page.splitlines() if line.startswith("|")]
    assert table == settings.markdown().splitlines(), "regenerate it: make settings-table"


def test_options_py_is_generated_from_this_table():
    assert (ROOT / "options.py").read_text() == settings.options_module(), "regenerate it: make settings-table"


def test_the_options_are_frozen():
    with pytest.raises(AttributeError):
        settings.defaults().port = 1  # type: ignore[misc]  # the write the frozen dataclass refuses


def test_nothing_else_reads_the_environment_for_configuration():
    """Every setting is in the table: no module reads a variable of its own."""
    for path in ROOT.glob("*.py"):
        if path.name in ("settings.py", "loaddata.py"):
            continue  # loaddata.py reads SERVICE_PORT only to print a curl line for the service
        assert not re.search(r"environ(\.get|\[)|getenv\(", path.read_text()), path.name
