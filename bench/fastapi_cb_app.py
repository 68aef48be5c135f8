"""The blog's FastAPI version of the user-profile API, over Couchbase with acouchbase.

The same app as ``fastapi_app.py`` (its pydantic models, token dependency and
error answers), with the store the blog used: the official SDK's asyncio API,
connected once at start-up, one awaited key-value get per request, the
document decoded to a dict and validated by the response model. Served by
uvicorn with uvloop and httptools:

    COUCHBASE_HOST=couchbase://127.0.0.1 uvicorn fastapi_cb_app:app --app-dir bench \
        --loop uvloop --http httptools --no-access-log

In its strongest form: the SDK's threshold-logging tracer and logging meter
are off (``enable_tracing=False, enable_metrics=False``). The nickname and
username lookups run our statement (``cbquery.py``, the first page of 100),
prepared, then get the page's documents concurrently (bench/lookups.py drives
them on Couchbase's SQL++ engine behind CAVES).
"""

from __future__ import annotations

import asyncio
import base64
import os
from contextlib import asynccontextmanager

from acouchbase.cluster import Cluster
from couchbase.auth import PasswordAuthenticator
from couchbase.exceptions import CouchbaseException, DocumentNotFoundException
from couchbase.options import ClusterOptions, QueryOptions
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi_app import Authorized, Image, Profile, failure, found, http_error, state
from starlette.exceptions import HTTPException as StarletteHTTPException


@asynccontextmanager
async def lifespan(app: FastAPI):
    env = os.environ.get
    auth = PasswordAuthenticator(env("COUCHBASE_USER", "Administrator"), env("COUCHBASE_PASSWORD", "password"))
    cluster = await Cluster.connect(
        env("COUCHBASE_HOST", "couchbase://127.0.0.1"), ClusterOptions(auth, enable_tracing=False, enable_metrics=False)
    )
    bucket = cluster.bucket(env("COUCHBASE_BUCKET", "sample_app"))
    await bucket.on_connect()
    scope = bucket.scope(env("COUCHBASE_SCOPE", "profiles"))
    state["scope"] = scope
    state["collections"] = {name: scope.collection(name) for name in ("user_data", "user_images")}
    token = await scope.collection("service_auth").get("service_auth:1")
    state["token"] = token.content_as[dict].get("token", "")
    yield
    await cluster.close()


app = FastAPI(lifespan=lifespan, openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
app.exception_handler(StarletteHTTPException)(http_error)


@app.exception_handler(CouchbaseException)
async def store_error(request: Request, exc: CouchbaseException) -> JSONResponse:
    return failure(503, "Service Unavailable")


async def get(collection: str, record_id: str) -> dict | None:
    try:
        result = await state["collections"][collection].get(f"{collection}:{record_id}")
    except DocumentNotFoundException:
        return None
    return result.content_as[dict]


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "success"}


@app.get("/api/v1/id/{record_id}", response_model=list[Profile], dependencies=Authorized)
async def get_by_id(record_id: str):
    doc = await get("user_data", record_id)
    return found([doc] if doc else [])


PAGE = 100
STATEMENTS = {  # cbquery.py's, for the default collection names; every value a named parameter
    "nickname": "SELECT RAW [META().id, record_id] FROM `user_data` WHERE nickname = $nickname"
    " AND record_id > $after ORDER BY record_id LIMIT $limit",
    "username": "SELECT RAW [META().id, record_id] FROM `user_data` WHERE user_id = $username"
    " AND record_id > $after ORDER BY record_id LIMIT $limit",
}


async def find(param: str, value: str) -> list[dict]:
    """The first page of the profiles ``param`` names: the statement, then the documents."""
    options = QueryOptions(named_parameters={param: value, "after": -(2**53), "limit": PAGE + 1}, adhoc=False)
    result = state["scope"].query(STATEMENTS[param], options)
    keys = [row[0] async for row in result.rows()][:PAGE]
    found = await asyncio.gather(*(state["collections"]["user_data"].get(key) for key in keys))
    return [doc.content_as[dict] for doc in found]


@app.get("/api/v1/nickname/{nickname}", response_model=list[Profile], dependencies=Authorized)
async def get_by_nickname(nickname: str):
    return found(await find("nickname", nickname))


@app.get("/api/v1/username/{username}", response_model=list[Profile], dependencies=Authorized)
async def get_by_username(username: str):
    return found(await find("username", username))


@app.get("/api/v1/picture/record/{record_id}", response_model=list[Image], dependencies=Authorized)
async def get_picture_record(record_id: str):
    doc = await get("user_images", record_id)
    return found([doc] if doc else [])


@app.get("/api/v1/picture/raw/{record_id}", dependencies=Authorized)
async def get_picture_raw(record_id: str) -> Response:
    doc = await get("user_images", record_id)
    if doc is None:
        raise HTTPException(404, "Not Found")
    return Response(base64.b64decode(doc["image"]), media_type=f"image/{doc['type']}")
