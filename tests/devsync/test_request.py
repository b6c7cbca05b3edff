"""Request validation and body limits of the development sync service, over real HTTP.

The expected messages are those of the PowerSync service (ajv over the JSON Schema of its
`StreamingSyncRequest` codec). Requests carry no token: a refusal here therefore also shows
that validation comes before authorization, as in the service (a valid body gets 401).
"""

from __future__ import annotations

import json
import select
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from papyrus.devsync.config import Settings
from papyrus.devsync.request import BODY_LIMIT, MAX_CLIENT_ID
from papyrus.devsync.service import create_app
from tests.conftest import LiveServer

from .conftest import AUDIENCE, SourceDb
from .test_stream import ALICE, request_body

ANY_OF = "anyOf must match a schema in anyOf"
SUB = "/streams/subscriptions/0"


@pytest.fixture(scope="module")
def front() -> Iterator[str]:
    """The service's HTTP app without replication behind it: validation needs none."""
    settings = Settings(database_url="postgresql://127.0.0.1:1/none", jwks_uri="http://127.0.0.1:1")
    with LiveServer(create_app(settings), lifespan="off") as server:
        yield server.url


def post(
    url: str, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    """`body` as JSON (a lone surrogate goes out as the escape a hostile client would send)."""
    headers = {"content-type": "application/json", **(headers or {})}
    return httpx.post(f"{url}/sync/stream", content=json.dumps(body), headers=headers, **kwargs)


def refusal(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"], error["name"]) == (
        "PSYNC_S2001",
        400,
        "ValidationError",
    )
    assert error["description"] == "Validation failed"
    return json.loads(error["details"])


def sub(**fields: Any) -> dict[str, Any]:
    return {"streams": {"subscriptions": [{"stream": "books", **fields}]}}


# (field being wrong, request fields, the service's messages)
REFUSED = [
    ("buckets", {"buckets": {}}, ["/buckets: type must be array"]),
    ("buckets[]", {"buckets": ["b"]}, ["/buckets/0: type must be object"]),
    (
        "buckets[].name",
        {"buckets": [{"name": 1, "after": "0"}]},
        ["/buckets/0/name: type must be string"],
    ),
    (
        "buckets[].after",
        {"buckets": [{"name": "b", "after": 0}]},
        ["/buckets/0/after: type must be string"],
    ),
    (
        "buckets[].after missing",
        {"buckets": [{"name": "b"}]},
        ["/buckets/0 must have required property 'after'"],
    ),
    ("only", {"only": "b"}, ["/only: type must be array"]),
    ("only[]", {"only": [1]}, ["/only/0: type must be string"]),
    ("include_checksum", {"include_checksum": "true"}, ["/include_checksum: type must be boolean"]),
    ("raw_data", {"raw_data": 1}, ["/raw_data: type must be boolean"]),
    ("raw_data null", {"raw_data": None}, ["/raw_data: type must be boolean"]),
    ("parameters null", {"parameters": None}, ["/parameters: type must be object"]),
    ("parameters array", {"parameters": []}, ["/parameters: type must be object"]),
    ("app_metadata", {"app_metadata": "x"}, ["/app_metadata: type must be object"]),
    (
        "app_metadata value",
        {"app_metadata": {"build": 42}},
        ["/app_metadata/build: type must be string"],
    ),
    ("client_id", {"client_id": 7}, ["/client_id: type must be string"]),
    ("client_id null", {"client_id": None}, ["/client_id: type must be string"]),
    ("streams", {"streams": []}, ["/streams: type must be object"]),
    (
        "streams.subscriptions missing",
        {"streams": {}},
        ["/streams must have required property 'subscriptions'"],
    ),
    (
        "streams.subscriptions",
        {"streams": {"subscriptions": {}}},
        ["/streams/subscriptions: type must be array"],
    ),
    (
        "streams.include_defaults",
        {"streams": {"include_defaults": "yes", "subscriptions": []}},
        ["/streams/include_defaults: type must be boolean"],
    ),
    (
        "subscriptions[].stream",
        {
            "streams": {
                "subscriptions": [{"stream": 1, "parameters": None, "override_priority": None}]
            }
        },
        [f"{SUB}/stream: type must be string"],
    ),
    (
        "subscriptions[] missing fields",
        sub(),
        [
            f"{SUB} must have required property 'parameters'",
            f"{SUB} must have required property 'override_priority'",
        ],
    ),
    (
        "subscriptions[].parameters",
        sub(parameters="x", override_priority=None),
        [
            f"{SUB}/parameters: type must be object",
            f"{SUB}/parameters: type must be null",
            f"{SUB}/parameters: {ANY_OF}",
        ],
    ),
    (
        "subscriptions[].override_priority",
        sub(parameters=None, override_priority=True),
        [
            f"{SUB}/override_priority: type must be number",
            f"{SUB}/override_priority: type must be null",
            f"{SUB}/override_priority: {ANY_OF}",
        ],
    ),
    (
        "several at once",
        {"buckets": "x", "parameters": None, "client_id": 1},
        [
            "/buckets: type must be array",
            "/parameters: type must be object",
            "/client_id: type must be string",
        ],
    ),
]

# What the service accepts and then fails on (or cannot store): refused up front here.
AFTER = "/buckets/0/after: must be a decimal op id (a 64-bit integer)"
TEXT = "must be text without NUL characters or unpaired surrogates"
REFUSED_HERE = [
    ("after superscript digit", {"buckets": [{"name": "b", "after": "²"}]}, [AFTER]),
    ("after 5,000 digits", {"buckets": [{"name": "b", "after": "1" * 5000}]}, [AFTER]),
    ("after over int64", {"buckets": [{"name": "b", "after": str(2**63)}]}, [AFTER]),
    ("after empty", {"buckets": [{"name": "b", "after": ""}]}, [AFTER]),
    ("after decimal point", {"buckets": [{"name": "b", "after": "1.0"}]}, [AFTER]),
    ("client_id NUL", {"client_id": "a\x00b"}, [f"/client_id: {TEXT}"]),
    ("client_id lone surrogate", {"client_id": "a\ud800"}, [f"/client_id: {TEXT}"]),
    (
        "client_id too long",
        {"client_id": "c" * (MAX_CLIENT_ID + 1)},
        [f"/client_id: must be at most {MAX_CLIENT_ID} characters"],
    ),
    ("parameter NUL", {"parameters": {"list": "x\x00"}}, [f"/parameters/list: {TEXT}"]),
    ("parameter key surrogate", {"parameters": {"\udfff": 1}}, [f"/parameters: keys {TEXT}"]),
]


@pytest.mark.parametrize(
    ("fields", "messages"),
    [pytest.param(f, m, id=name) for name, f, m in REFUSED + REFUSED_HERE],
)
def test_refused_fields_answer_400_s2001_before_auth(
    front: str, fields: dict[str, Any], messages: list[str]
) -> None:
    assert refusal(post(front, request_body() | fields)) == messages


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="what the SDKs send"),
        pytest.param({"binary_data": "anything", "x-unknown": [1]}, id="unknown fields"),
        pytest.param({"buckets": [{"name": "b", "after": "9223372036854775807"}]}, id="int64 max"),
        pytest.param({"app_metadata": {"app": "papyrus", "v": "1"}}, id="app_metadata"),
        pytest.param(sub(parameters={"a": [1]}, override_priority=1), id="subscription"),
        pytest.param(sub(parameters=None, override_priority=2.5), id="null parameters"),
    ],
)
def test_valid_requests_reach_authorization(front: str, fields: dict[str, Any]) -> None:
    response = post(front, request_body() | fields)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "PSYNC_S2106"


def test_an_empty_post_is_an_empty_request(front: str) -> None:
    assert httpx.post(f"{front}/sync/stream").status_code == 401


def test_query_parameters_are_validated_with_the_body(front: str) -> None:
    """The service merges the query string under the body before validating."""
    response = post(front, {}, params={"parameters": "x"})
    assert refusal(response) == ["/parameters: type must be object"]
    assert post(front, {"parameters": {}}, params={"parameters": "x"}).status_code == 401


@pytest.mark.parametrize(
    "body",
    [[], "text", 5, None],
    ids=["array", "string", "number", "null"],
)
def test_a_body_that_is_not_an_object_is_refused(front: str, body: Any) -> None:
    assert refusal(post(front, body)) == [": type must be object"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{", "FST_ERR_CTP_INVALID_JSON_BODY"),
        (b'{"client_id": "\xff"}', "FST_ERR_CTP_INVALID_JSON_BODY"),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, "FST_ERR_CTP_INVALID_JSON_BODY"),  # too deep here
        (b'{"raw_data": NaN}', "FST_ERR_CTP_INVALID_JSON_BODY"),  # not JSON
        (b'{"parameters": {"__proto__": {}}}', "FST_ERR_CTP_INVALID_JSON_BODY"),
        (b"", "FST_ERR_CTP_EMPTY_JSON_BODY"),
    ],
    ids=["truncated", "not-utf8", "too-deep", "nan", "proto", "empty"],
)
def test_malformed_json_answers_like_fastify(front: str, raw: bytes, code: str) -> None:
    response = httpx.post(
        f"{front}/sync/stream", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] | {"description": None} == {
        "name": "FastifyError",
        "code": code,
        "status": 400,
        "description": None,
    }


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(front: str, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(f"{front}/sync/stream", content=b'{"buckets": []}', headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "FST_ERR_CTP_INVALID_MEDIA_TYPE"


def _raw_request(url: str, head: str) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_declared_200_mb_body_is_refused_before_it_is_sent(front: str) -> None:
    with _raw_request(
        front,
        "POST /sync/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {200 * 1024 * 1024}\r\n\r\n{{",
    ) as sock:
        status, body = _read_response(sock)  # answered with 199.99 MB still unsent
    assert status == 413
    assert body["error"] == {
        "name": "FastifyError",
        "code": "FST_ERR_CTP_BODY_TOO_LARGE",
        "status": 413,
        "description": "Request body is too large",
    }


def test_a_chunked_body_is_cut_off_at_the_limit(front: str) -> None:
    chunk = b'{"parameters": {"pad": "' + b"x" * 65_536
    sent = 0
    with _raw_request(
        front,
        "POST /sync/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
    ) as sock:
        while sent < 200 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        status, body = _read_response(sock)
    assert status == 413 and body["error"]["code"] == "FST_ERR_CTP_BODY_TOO_LARGE"
    # The service stopped reading near the limit; the rest only filled socket buffers.
    assert BODY_LIMIT < sent < 64 * 1024 * 1024


def test_a_body_at_the_limit_is_read(front: str) -> None:
    body = json.dumps({"parameters": {"pad": ""}})
    body = body.replace('""', '"' + "x" * (BODY_LIMIT - len(body)) + '"')
    assert len(body) == BODY_LIMIT
    response = httpx.post(
        f"{front}/sync/stream", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("query", "messages"),
    [
        ("client_id=a%00b", [f"/client_id: {TEXT}"]),
        (
            f"client_id={'c' * (MAX_CLIENT_ID + 1)}",
            [f"/client_id: must be at most {MAX_CLIENT_ID} characters"],
        ),
        ("client_id=a&client_id=b", ["/client_id: type must be string"]),
    ],
    ids=["nul", "too-long", "repeated"],
)
def test_write_checkpoint_client_id_is_validated_before_auth(
    front: str, query: str, messages: list[str]
) -> None:
    assert refusal(httpx.get(f"{front}/write-checkpoint2.json?{query}")) == messages
    assert httpx.get(f"{front}/write-checkpoint2.json?client_id=ok").status_code == 401


def test_signed_in_clients_get_400_not_a_cut_stream_or_a_500(
    source_db: SourceDb, start_service, signer_session
) -> None:
    """Issue: these answered 200 and then cut the stream, or a plain-text 500."""
    service = start_service()
    headers = {"Authorization": f"Token {signer_session.token(ALICE)}"}
    for fields in (
        {"buckets": [{"name": "b", "after": "²"}]},
        {"buckets": [{"name": "b", "after": "9" * 5000}]},
        {"client_id": "c\x00"},
        {"client_id": "c\ud800"},
    ):
        assert refusal(post(service.url, request_body() | fields, headers=headers)), fields
    response = httpx.get(f"{service.url}/write-checkpoint2.json?client_id=c%00", headers=headers)
    assert refusal(response) == [f"/client_id: {TEXT}"]
    ok = httpx.get(f"{service.url}/write-checkpoint2.json?client_id=c", headers=headers)
    assert ok.status_code == 200 and ok.json() == {"data": {"write_checkpoint": "1"}}


def test_unknown_routes_answer_in_the_service_shape(front: str) -> None:
    for response in (httpx.get(f"{front}/nope"), httpx.get(f"{front}/sync/stream")):
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "PSYNC_S2002" and error["status"] == 404


def test_an_unexpected_failure_is_a_500_in_the_service_shape(
    jwks_server: str, signer_session
) -> None:
    """The database is unreachable: the write checkpoint fails inside the handler."""
    settings = Settings(
        database_url="postgresql://127.0.0.1:1/none",
        jwks_uri=jwks_server,
        audiences=(AUDIENCE,),
    )
    with LiveServer(create_app(settings), lifespan="off") as server:
        response = httpx.get(
            f"{server.url}/write-checkpoint2.json?client_id=c",
            headers={"Authorization": f"Token {signer_session.token(ALICE)}"},
        )
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "name": "InternalServerError",
            "code": "PSYNC_S2001",
            "status": 500,
            "description": "Something went wrong",
        }
    }
