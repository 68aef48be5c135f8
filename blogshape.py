"""Profiles shaped like the data the blog's own generator wrote (``loaddata.py --shape blog``).

The blog series loaded its service's data with its author's generator (cbperf's
``profile_demo`` schema, bucket ``sample_app``, scope ``profiles``). This writes data of that
shape, with its rules, so the service can be tried on what a team that followed the blog has:

- the fields of ``user_data``, in its order: record_id, name, nickname, picture, user_id,
  email, email_verified, first_name, last_name, address, city, state, zip_code, phone,
  date_of_birth. One first and one last name per profile, drawn from 20 each (10 men's and
  10 women's first names), make the name, the nickname (the first name's initial and the
  last name, lower case: 13 initials x 20 = 260 nicknames for any number of profiles), the
  email (``first.last@example.com``: not unique) and the username (``firstlast`` and 4
  random digits: not unique either);
- a list is drawn from as the generator draws: ``bit_length(n)`` random bits modulo ``n``,
  so the first entries of a list of 20 (2**5 = 32 > 20) come twice as often as the others:
  one nickname in 64 is ``jsmith``;
- digits as it draws them (a random byte modulo 10), its phone ``NNN-555-NNNN``, address
  ``NNNN <street> <type>``, 16 invented cities, 56 state codes, a 5-digit zip code and a
  birth date ``MM/DD/YYYY`` 1040 weeks and up to 2**14 days before a day (the generator counts from the day
  it runs; here from 2023-03-01, so that the same seed gives the same documents);
- ``user_images``: ``{"record_id": N, "type": "jpeg", "image": <base64>}``, the image a
  128 x 128 RGBA picture of random noise saved as JPEG 2000 (a JP2 file: labelled "jpeg",
  and not a JPEG); its generator encodes one per profile (~25 ms and ~54 kB each), this one
  a pool of ``IMAGE_POOL`` once per run, each profile taking one;
- ``picture``: the key of the profile's image document (``user_images:N``), as the
  generator's link rule sets it (``MERGE ... SET t.picture = meta(s).id``).

The JPEG 2000 encoder is Pillow's (OpenJPEG), imported only for this shape: the service
itself never needs it.
"""

from __future__ import annotations

import base64
import datetime
import random
from collections.abc import Iterator

FIRST = (
    "James Robert John Michael William David Richard Joseph Thomas Charles "
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez "
    "Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin"
).split()
STREETS = (
    "Main Church Liberty Park Prospect Pine River Elm High Union Willow Dogwood New North South East West 1st 2nd 3rd"
).split()
STREET_TYPES = "Street Road Lane Court Avenue Parkway Trail Way Drive".split()
CITIES = (
    "Mannorburg",
    "New Highworth",
    "Salttown",
    "Farmingchester",
    "East Sagepool",
    "Strongdol",
    "Weirton",
    "Hapwich",
    "Lunfield Park",
    "Cruxbury",
    "Oakport",
    "Chatham",
    "Beachborough",
    "Farmingbury Falls",
    "Trinsdale",
    "Wingview",
)
STATES = (
    "AL AK AZ AR CA CZ CO CT DE DC FL GA GU HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE "
    "NV NH NJ NM NY NC ND OH OK OR PA PR RI SC SD TN TX UT VT VI VA WA WV WI WY"
).split()
BIRTHS_BEFORE = datetime.date(2023, 3, 1)  # the generator's "today"; see the module docstring
IMAGE_SIZE = 128
IMAGE_POOL = 16


def draw(rng: random.Random, items: tuple[str, ...] | list[str]) -> str:
    """One item, drawn as the generator draws: bit_length(n) random bits, modulo n."""
    return items[rng.getrandbits(len(items).bit_length()) % len(items)]


def digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.getrandbits(8) % 10) for _ in range(n))


def profile(rng: random.Random, record_id: int, images: str) -> dict:
    first, last = draw(rng, FIRST), draw(rng, LAST)
    born = BIRTHS_BEFORE - datetime.timedelta(days=rng.getrandbits(14), weeks=1040)
    return {
        "record_id": record_id,
        "name": f"{first} {last}",
        "nickname": first[0].lower() + last.lower(),
        "picture": f"{images}:{record_id}",
        "user_id": first.lower() + last.lower() + digits(rng, 4),
        "email": f"{first.lower()}.{last.lower()}@example.com",
        "email_verified": rng.getrandbits(1) == 1,
        "first_name": first,
        "last_name": last,
        "address": f"{digits(rng, 4)} {draw(rng, STREETS)} {draw(rng, STREET_TYPES)}",
        "city": draw(rng, CITIES),
        "state": draw(rng, STATES),
        "zip_code": digits(rng, 5),
        "phone": f"{digits(rng, 3)}-555-{digits(rng, 4)}",
        "date_of_birth": born.strftime("%m/%d/%Y"),
    }


def noise_jpeg2000(rng: random.Random) -> str:
    """A 128 x 128 RGBA picture of random noise as a JPEG 2000 file, base64."""
    import io

    from PIL import Image  # Pillow: for this shape only (see the module docstring)

    picture = Image.frombytes("RGB", (IMAGE_SIZE, IMAGE_SIZE), rng.randbytes(IMAGE_SIZE * IMAGE_SIZE * 3))
    out = io.BytesIO()
    picture.convert("RGBA").save(out, format="JPEG2000")
    return base64.b64encode(out.getvalue()).decode()


def generate(count: int, seed: int, images: str) -> Iterator[tuple[dict, dict]]:
    """(profile, image) for ids 1..count, ``images`` the images' collection the pictures link
    to; the same for the same seed, and record N whatever the count."""
    pool_rng = random.Random(f"blog-images:{seed}")
    pool = [noise_jpeg2000(pool_rng) for _ in range(min(IMAGE_POOL, count))]
    for record_id in range(1, count + 1):
        rng = random.Random(f"blog:{seed}:{record_id}")
        image = {"record_id": record_id, "type": "jpeg", "image": pool[rng.randrange(len(pool))]}
        yield profile(rng, record_id, images), image
