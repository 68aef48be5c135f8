"""blogshape.py: the blog generator's data shape (its rules, pools and pictures), loaded by
``loaddata.py --shape blog`` under renamed collections and served: every picture with the
Content-Type of its bytes."""

from __future__ import annotations

import base64
import collections
import datetime
import io
import json
import re

import pytest
from PIL import Image

import blogshape
import loaddata
from testkit import ServiceProcess, run_loaddata

FIELDS = list(next(loaddata.generate(1, seed=1))[0])
JP2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@pytest.fixture(scope="module")
def profiles():
    return [p for p, _ in blogshape.generate(20000, seed=7, images="user_images")]


@pytest.mark.inprocess
def test_the_fields_and_rules_of_the_generator(profiles):
    for p in profiles[:2000]:
        first, last = p["first_name"], p["last_name"]
        assert list(p) == FIELDS, "the fields of the service's data, in its order"
        assert first in blogshape.FIRST and last in blogshape.LAST and p["name"] == f"{first} {last}"
        assert p["nickname"] == first[0].lower() + last.lower()
        assert re.fullmatch(re.escape(first.lower() + last.lower()) + r"[0-9]{4}", p["user_id"])
        assert p["email"] == f"{first.lower()}.{last.lower()}@example.com"
        assert p["picture"] == f"user_images:{p['record_id']}"
        assert re.fullmatch(r"[0-9]{3}-555-[0-9]{4}", p["phone"]) and re.fullmatch(r"[0-9]{5}", p["zip_code"])
        number, street, kind = p["address"].split(" ", 2)
        assert re.fullmatch(r"[0-9]{4}", number) and street in blogshape.STREETS and kind in blogshape.STREET_TYPES
        assert p["city"] in blogshape.CITIES and p["state"] in blogshape.STATES
        assert isinstance(p["email_verified"], bool)
        born = datetime.datetime.strptime(p["date_of_birth"], "%m/%d/%Y").date()
        assert 1040 * 7 <= (blogshape.BIRTHS_BEFORE - born).days < 1040 * 7 + 2**14  # 1040 weeks and 14 bits of days


@pytest.mark.inprocess
def test_about_260_nicknames_for_any_count_drawn_as_the_generator_draws(profiles):
    nicknames = collections.Counter(p["nickname"] for p in profiles)
    possible = {f[0].lower() + la.lower() for f in blogshape.FIRST for la in blogshape.LAST}
    assert len(possible) == 260 and set(nicknames) == possible
    # bit_length(20) = 5 bits modulo 20: James, John, Joseph (2/32 each), Jennifer and Jessica
    # (1/32) make a J one time in 4, and Smith (2/32) makes jsmith one profile in 64.
    assert 20000 / 64 * 0.8 < nicknames["jsmith"] < 20000 / 64 * 1.2
    assert nicknames.most_common(1)[0][1] > 3 * min(nicknames.values())
    usernames = collections.Counter(p["user_id"] for p in profiles)
    assert usernames.most_common(1)[0][1] > 1, "the generator's usernames repeat"


@pytest.mark.inprocess
def test_the_same_seed_the_same_documents_and_a_record_whatever_the_count(profiles):
    again = [p for p, _ in blogshape.generate(300, seed=7, images="user_images")]
    assert again == profiles[:300]
    assert [p for p, _ in blogshape.generate(300, seed=8, images="user_images")] != again


@pytest.mark.inprocess
def test_pictures_are_jpeg_2000_labelled_jpeg():
    for _, image in blogshape.generate(20, seed=3, images="pics"):
        assert list(image) == ["record_id", "type", "image"] and image["type"] == "jpeg"
        data = base64.b64decode(image["image"])
        assert data.startswith(JP2) and not data.startswith(b"\xff\xd8")  # a JP2 file, not a JPEG
        picture = Image.open(io.BytesIO(data))
        assert (picture.format, picture.size, picture.mode) == ("JPEG2000", (128, 128), "RGBA")


@pytest.mark.socket
def test_blog_data_under_renamed_collections_is_served_with_the_pictures_types(tmp_path):
    names = {"PROFILES_COLLECTION": "people", "IMAGES_COLLECTION": "pics", "AUTH_COLLECTION": "secrets"}
    env = {"USERPROFILE_DB": str(tmp_path / "blog.db"), **names}
    out = run_loaddata(env, "--shape", "blog", "--count", "400", "--images", "40", "--token", "tok").stdout
    assert "loaded 400 profiles and 40 images" in out
    svc = ServiceProcess(env, log_path=tmp_path / "service.log").start(wait_for="/readyz")
    try:
        [profile] = json.loads(svc.get("/api/v1/id/12", "tok")[2])
        assert profile["picture"] == "pics:12"  # the key of its picture, in the renamed collection
        status, headers, data = svc.get("/api/v1/picture/raw/12", "tok")
        assert status == 200 and headers["Content-Type"] == "image/jp2" and data.startswith(JP2)
        assert Image.open(io.BytesIO(data)).size == (128, 128)
        [record] = json.loads(svc.get("/api/v1/picture/record/12", "tok")[2])
        assert record["type"] == "jpeg" and base64.b64decode(record["image"]) == data
        assert svc.get("/api/v1/picture/raw/41", "tok")[0] == 404  # --images 40
        status, _, body = svc.get(f"/api/v1/nickname/{profile['nickname']}?limit=1000", "tok")
        assert status == 200 and profile in json.loads(body)
        assert svc.get(f"/api/v1/username/{profile['user_id']}", "tok")[0] == 200
    finally:
        assert svc.stop() == 0
    assert "token: read from secrets:1" in svc.log()
