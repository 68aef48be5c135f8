"""loaddata.py: determinism, the refusal to overwrite, the token and its rotation, real images.
(Against CAVES: test_caves.py; the rotation seen by a running service: test_userprofile_service.py.)"""

from __future__ import annotations

import base64
import json
import sqlite3
import struct
import subprocess
import zlib

import pytest

import loaddata
from testkit import run_loaddata

pytestmark = pytest.mark.inprocess


def dump(db) -> dict:
    with sqlite3.connect(db) as conn:
        return {
            table: dict(conn.execute(f"SELECT key, doc FROM {table}"))
            for table in ("user_data", "user_images", "service_auth")
        }


def refused(env: dict, *args: str) -> str:
    """loaddata.py's refusal: exit 1, and what it said on stderr."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_loaddata(env, *args)
    assert failed.value.returncode == 1 and "Traceback" not in failed.value.stderr
    return failed.value.stderr


def test_same_seed_same_documents_and_a_second_run_refuses_and_changes_nothing(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    out = run_loaddata({"USERPROFILE_DB": str(a)}, "--count", "120", "--seed", "9", "--token", "tk").stdout
    assert "loaded 120 profiles and 120 images" in out and "documents/s" in out
    run_loaddata({"USERPROFILE_DB": str(b)}, "--count", "120", "--seed", "9", "--token", "tk")
    first = dump(a)
    assert first == dump(b)
    assert len(first["user_data"]) == len(first["user_images"]) == 120
    # Again, even a smaller load of other people: refused, how many named, the flag said, nothing written.
    said = refused({"USERPROFILE_DB": str(a)}, "--count", "150", "--seed", "10", "--token", "tk")
    assert "120 in user_data, 120 in user_images" in said and "--overwrite" in said and "nothing was written" in said
    assert dump(a) == first
    run_loaddata({"USERPROFILE_DB": str(a)}, "--count", "120", "--seed", "9", "--token", "tk", "--overwrite")
    assert dump(a) == first  # the same documents, rewritten
    run_loaddata({"USERPROFILE_DB": str(b)}, "--count", "120", "--seed", "10", "--token", "tk", "--overwrite")
    assert dump(b)["user_data"] != first["user_data"]  # another seed, other people


def test_keys_beyond_those_a_load_writes_are_no_reason_to_refuse(tmp_path):
    env = {"USERPROFILE_DB": str(tmp_path / "more.db")}
    run_loaddata(env, "--count", "10", "--token", "tk")
    with sqlite3.connect(tmp_path / "more.db") as conn:
        conn.execute("DELETE FROM user_data WHERE key != 'user_data:10'")
        conn.execute("DELETE FROM user_images")
    said = refused(env, "--count", "12", "--token", "tk")
    assert "(1 in user_data)" in said
    run_loaddata(env, "--count", "5", "--token", "tk")  # ids 1..5 are free: loaded
    assert len(dump(tmp_path / "more.db")["user_data"]) == 6


def test_a_record_does_not_depend_on_the_count(tmp_path):
    small = dict((p["record_id"], p) for p, _ in loaddata.generate(50, seed=3))
    large = dict((p["record_id"], p) for p, _ in loaddata.generate(80, seed=3))
    assert [small[i]["user_id"] for i in range(1, 51)] == [large[i]["user_id"] for i in range(1, 51)]


def test_profiles_are_realistic_unique_and_nicknames_repeat():
    profiles = [p for p, _ in loaddata.generate(3000, seed=1)]
    assert len({p["user_id"] for p in profiles}) == 3000
    nicknames = [p["nickname"] for p in profiles]
    assert len(set(nicknames)) < len(nicknames) / 2
    for p in profiles[:200]:
        assert "@" in p["email"] and p["picture"] == p["record_id"]
        assert p["date_of_birth"][4] == "-" and len(p["zip_code"]) == 5
        assert isinstance(p["email_verified"], bool)


def test_images_are_valid_pngs():
    for _, image in loaddata.generate(20, seed=5):
        data = base64.b64decode(image["image"])
        assert image["type"] == "png" and data[:8] == b"\x89PNG\r\n\x1a\n"
        pos, chunks = 8, {}
        while pos < len(data):  # walk the chunks and check every CRC
            (length,) = struct.unpack(">I", data[pos : pos + 4])
            tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
            (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
            assert crc == zlib.crc32(tag + body)
            chunks[tag] = body
            pos += 12 + length
        width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
        assert (width, height, depth, colour) == (40, 40, 8, 2)
        assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + 3 * width)
        assert b"IEND" in chunks


def test_token_generated_once_then_kept_unless_given(tmp_path):
    env = {"USERPROFILE_DB": str(tmp_path / "t.db")}
    out = run_loaddata(env, "--count", "5").stdout
    [generated] = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("token: ")]
    assert len(generated) >= 32
    assert "token:" not in run_loaddata(env, "--count", "5", "--overwrite").stdout  # kept, and not printed again
    stored = json.loads(dump(tmp_path / "t.db")["service_auth"]["service_auth:1"])
    assert stored == {"token": generated}
    # Another token given with a load: the token in force is not replaced on the way.
    assert "1 in service_auth" in refused(env, "--count", "0", "--token", "given")
    assert json.loads(dump(tmp_path / "t.db")["service_auth"]["service_auth:1"]) == {"token": generated}


def test_rotate_token_replaces_the_token_alone_and_prints_it_only_when_asked(tmp_path):
    db = tmp_path / "r.db"
    env = {"USERPROFILE_DB": str(db)}
    run_loaddata(env, "--count", "5", "--token", "first")
    before = dump(db)
    out = run_loaddata(env, "--rotate-token").stdout
    assert "token rotated" in out and "token:" not in out
    rotated = json.loads(dump(db)["service_auth"]["service_auth:1"])["token"]
    assert len(rotated) >= 32 and rotated != "first"
    assert {k: v for k, v in dump(db).items() if k != "service_auth"} == {
        k: v for k, v in before.items() if k != "service_auth"
    }
    out = run_loaddata(env, "--rotate-token", "--token", "second", "--show-token").stdout
    assert "token: second" in out and "Bearer second" in out
    assert "already the one in force" in refused(env, "--rotate-token", "--token", "second")
    with pytest.raises(subprocess.CalledProcessError) as misused:
        run_loaddata(env, "--rotate-token", "--overwrite")
    assert misused.value.returncode == 2 and "not with --if-empty or --overwrite" in misused.value.stderr


def test_if_empty_skips_a_seeded_store_and_show_token_prints_a_curl_line(tmp_path):
    env = {"USERPROFILE_DB": str(tmp_path / "s.db"), "SERVICE_PORT": "9123"}
    run_loaddata(env, "--count", "10", "--token", "abc")
    out = run_loaddata(env, "--count", "10000", "--if-empty", "--show-token").stdout
    assert "already holds 10 profiles; not loading" in out
    assert "token: abc" in out
    assert 'curl -H "Authorization: Bearer abc" http://localhost:9123/api/v1/id/1' in out
    assert len(dump(tmp_path / "s.db")["user_data"]) == 10


def test_no_progress_bar_when_not_a_terminal(tmp_path):
    result = run_loaddata({"USERPROFILE_DB": str(tmp_path / "q.db")}, "--count", "600")
    assert "#" not in result.stderr and "profiles\r" not in result.stderr


def test_help_shows_the_loaders_own_options_before_the_stores_and_where_the_password_comes_from(capsys):
    with pytest.raises(SystemExit):
        loaddata.main(["--help"])
    out = capsys.readouterr().out
    words = " ".join(out.split("options:", 1)[1].split())  # the list, after the usage line
    own, store = words.index("--count COUNT profiles"), words.index("--db USERPROFILE_DB")
    assert own < words.index("--seed SEED") < store
    assert "the same data (default 1)" in words and "(default 10000)" in words
    assert "From the environment only" in words and "COUCHBASE_PASSWORD" in words.split("From the environment only")[1]
