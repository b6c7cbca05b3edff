"""Bad input of every kind: a clear error or rejection, and nothing written.

Bad rows are rejections (200, recorded); a bad envelope is a 4xx in the one error shape.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from papyrus.server.sync.models import ROW_ID_MAX
from papyrus.server.sync.validation import MAX_BODY_BYTES, MAX_OPERATIONS
from tests.server.sync.conftest import (
    UPLOAD,
    Reader,
    count_books,
    entry,
    new_id,
    upload,
    upload_raw,
)

ROW = "3f2a6f0e-8d6b-4c1e-9f1e-2b7a5c9d0e11"


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_DATA = [
    ({"title": "T", "colour": "red"}, "unknown_field", "Unknown fields for books: colour."),
    ({"title": 42}, "invalid_value", "title: must be a string of 1 to 500 characters."),
    ({"title": ""}, "invalid_value", "title: must be a string of 1 to 500 characters."),
    ({"title": "x" * 501}, "invalid_value", "title: must be a string of 1 to 500 characters."),
    ({"title": "a\x00b"}, "invalid_value", "title: must not contain NUL characters."),
    ({"title": "T", "subtitle": ["x"]}, "invalid_value", "subtitle: must be a string of 0 to 500"),
    ({"title": "T", "isbn": "9" * 33}, "invalid_value", "isbn: must be a string of 0 to 32"),
    ({"title": "T", "description": "d" * 20_001}, "invalid_value", "description: must be"),
    ({"title": "T", "page_count": "3"}, "invalid_value", "page_count: must be an integer"),
    ({"title": "T", "page_count": -1}, "invalid_value", "page_count: must be an integer"),
    ({"title": "T", "page_count": 2**31}, "invalid_value", "page_count: must be an integer"),
    ({"title": "T", "page_count": 2.5}, "invalid_value", "page_count: must be an integer"),
    ({"title": "T", "page_count": True}, "invalid_value", "page_count: must be an integer"),
    ({"title": "T", "current_page": -5}, "invalid_value", "current_page: must be an integer"),
    ({"title": "T", "rating": 0}, "invalid_value", "rating: must be an integer from 1 to 5."),
    ({"title": "T", "rating": 6}, "invalid_value", "rating: must be an integer from 1 to 5."),
    ({"title": "T", "current_position": 1.5}, "invalid_value", "current_position: must be"),
    ({"title": "T", "current_position": -0.1}, "invalid_value", "current_position: must be"),
    ({"title": "T", "current_position": "0.5"}, "invalid_value", "current_position: must be"),
    ({"title": "T", "is_favorite": 2}, "invalid_value", "is_favorite: must be true, false"),
    ({"title": "T", "is_favorite": "true"}, "invalid_value", "is_favorite: must be true, false"),
    ({"title": "T", "reading_status": "done"}, "invalid_value", "reading_status: must be one of"),
    ({"title": "T", "co_authors": [1]}, "invalid_value", "co_authors: must hold strings"),
    ({"title": "T", "co_authors": "Eliot"}, "invalid_value", "co_authors: is a string but not"),
    ({"title": "T", "co_authors": {"a": 1}}, "invalid_value", "co_authors: must be a JSON array"),
    ({"title": "T", "co_authors": ["a"] * 101}, "invalid_value", "co_authors: must be a JSON"),
    ({"title": "T", "custom_metadata": [1]}, "invalid_value", "custom_metadata: must be a JSON"),
    ({"title": "T", "custom_metadata": "[1]"}, "invalid_value", "custom_metadata: must be a JSON"),
    ({"title": "T", "custom_metadata": "{"}, "invalid_value", "custom_metadata: is a string but"),
    (
        {"title": "T", "custom_metadata": {"k": "v" * 17_000}},
        "invalid_value",
        "custom_metadata: must be at most 16384 bytes",
    ),
    (
        {"title": "T", "custom_metadata": json.dumps({"a": _nested(21)})},
        "invalid_value",
        "custom_metadata: must nest at most 20 levels deep.",
    ),
    ({"title": "T", "custom_metadata": {"k\x00": 1}}, "invalid_value", "custom_metadata: must not"),
    ({"title": "T", "id": "00000000-0000-0000-0000-000000000000"}, "id_mismatch", "data.id"),
    ({"title": "T", "owner_user_id": "nobody"}, "owner_mismatch", "owner_user_id must be"),
    ({"author": "No title"}, "missing_field", "title: required."),
    ({"title": None}, "invalid_value", "title: cannot be null."),
]


@pytest.mark.parametrize(("data", "code", "message"), BAD_DATA)
def test_bad_field_values_are_rejected_with_a_clear_message(
    client: TestClient, alice: Reader, sql, data: dict[str, Any], code: str, message: str
) -> None:
    body = {"batch": [entry("PUT", new_id(), {"title": "Fine"}), entry("PUT", ROW, data, op_id=2)]}
    response = upload(client, alice, body)
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "rejected" and result["applied"] == 0
    [rejection] = result["rejections"]
    assert rejection["code"] == code and rejection["id"] == ROW and rejection["op_id"] == 2
    assert rejection["message"].startswith(message), rejection["message"]
    assert count_books(sql) == 0
    stored = sql("SELECT code, message FROM sync_rejections")
    assert stored == [(code, rejection["message"])]


def test_patch_field_rules_match_put(client: TestClient, alice: Reader, sql) -> None:
    body = {"batch": [entry("PATCH", ROW, {"title": None, "rating": "5", "shelf": 1})]}
    [rejection] = upload(client, alice, body).json()["rejections"]
    assert rejection["code"] == "unknown_field"
    assert rejection["message"] == (
        "Unknown fields for books: shelf.; title: cannot be null.; "
        "rating: must be an integer from 1 to 5."
    )


BAD_ENTRIES = [
    ("not an object", "invalid_entry", None),
    ({"op": "UPSERT", "type": "books", "id": ROW, "data": {"title": "T"}}, "invalid_op", ROW),
    ({"op": 1, "type": "books", "id": ROW}, "invalid_op", ROW),
    ({"op": "PUT", "type": "authors", "id": ROW, "data": {"title": "T"}}, "unknown_table", ROW),
    ({"op": "PUT", "id": ROW, "data": {"title": "T"}}, "unknown_table", ROW),
    (
        {"op": "PUT", "type": "books", "id": "book-1", "data": {"title": "T"}},
        "invalid_id",
        "book-1",
    ),
    ({"op": "DELETE", "type": "books", "id": 12}, "invalid_id", "12"),
    ({"op": "PUT", "type": "books", "data": {"title": "T"}}, "invalid_id", None),
    ({"op": "PUT", "type": "books", "id": ROW}, "invalid_data", ROW),
    ({"op": "PATCH", "type": "books", "id": ROW, "data": [1]}, "invalid_data", ROW),
]


@pytest.mark.parametrize(("item", "code", "shown_id"), BAD_ENTRIES)
def test_bad_entries_are_rejected(
    client: TestClient, alice: Reader, sql, item: Any, code: str, shown_id: str | None
) -> None:
    body = {"batch": [entry("PUT", new_id(), {"title": "Fine"}), item]}
    result = upload(client, alice, body).json()
    assert result["status"] == "rejected"
    [rejection] = result["rejections"]
    assert (rejection["code"], rejection["id"]) == (code, shown_id)
    assert rejection["message"]
    assert count_books(sql) == 0


def test_values_json_cannot_carry_to_postgres_are_rejected_not_errors(
    client: TestClient, alice: Reader, sql
) -> None:
    """Unpaired surrogates and NaN parse in Python but PostgreSQL cannot store them."""
    template = '{"batch": [{"op": "PUT", "type": "books", "id": "%s", "op_id": %d, "data": %s}]}'
    cases = [
        '{"title": "bad \\ud800 text"}',
        '{"title": "T", "current_position": NaN}',
        '{"title": "T", "custom_metadata": {"x": Infinity}}',
        '{"title": "T", "custom_metadata": {"\\udfff": 1}}',
        '{"title": "T", "co_authors": "[\\"\\\\ud800\\"]"}',
    ]
    for op_id, data in enumerate(cases):
        raw = (template % (ROW, op_id, data)).encode()
        response = upload_raw(client, alice, raw)
        assert response.status_code == 200, (data, response.text)
        assert response.json()["rejections"][0]["code"] == "invalid_value", data
    assert count_books(sql) == 0


def test_a_hostile_id_is_echoed_safely(client: TestClient, alice: Reader, sql) -> None:
    raw = b'{"batch": [{"op": "PUT", "type": "books", "id": "\\ud800\\u0000' + b"x" * 200 + b'"}]}'
    response = upload_raw(client, alice, raw)
    assert response.status_code == 200
    [rejection] = response.json()["rejections"]
    assert rejection["code"] == "invalid_id"
    assert len(rejection["id"]) <= ROW_ID_MAX and "\x00" not in rejection["id"]
    assert sql("SELECT row_id FROM sync_rejections")[0][0] == rejection["id"]


def _assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe\x00garbage", 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),
        (b"[]", 422, "invalid_upload"),
        (b'{"batch": {"op": "PUT"}}', 422, "invalid_upload"),
        (b'{"crud": []}', 422, "invalid_upload"),
        (b'"batch"', 422, "invalid_upload"),
        (b"", 400, "invalid_json"),
    ],
)
def test_a_malformed_envelope_is_a_4xx_and_writes_nothing(
    client: TestClient, alice: Reader, sql, raw: bytes, status: int, code: str
) -> None:
    _assert_error(upload_raw(client, alice, raw), status, code)
    assert count_books(sql) == 0
    assert sql("SELECT count(*) FROM sync_rejections")[0][0] == 0


def test_more_than_1000_operations_is_413(client: TestClient, alice: Reader, sql) -> None:
    batch = [entry("DELETE", new_id(), op_id=i) for i in range(MAX_OPERATIONS + 1)]
    response = upload(client, alice, {"batch": batch})
    _assert_error(response, 413, "too_many_operations")
    assert response.json()["error"]["details"] == {"max_operations": 1000}

    at_limit = [entry("PUT", new_id(), {"title": f"B{i}"}, op_id=i) for i in range(MAX_OPERATIONS)]
    assert upload(client, alice, {"batch": at_limit}).json() == {
        "status": "applied",
        "applied": 1000,
    }
    assert count_books(sql) == 1000


def test_a_body_over_2_mib_is_413_before_reading(client: TestClient, alice: Reader, sql) -> None:
    data = {"title": "T", "description": "d" * 20_000}
    batch = [entry("PUT", new_id(), data, op_id=i) for i in range(110)]
    raw = json.dumps({"batch": batch}).encode()
    assert len(raw) > MAX_BODY_BYTES
    response = upload_raw(client, alice, raw)
    _assert_error(response, 413, "payload_too_large")
    assert response.json()["error"]["details"] == {"max_bytes": MAX_BODY_BYTES}
    assert count_books(sql) == 0


def test_a_streamed_body_is_cut_off_at_2_mib(client: TestClient, alice: Reader, sql) -> None:
    """Without Content-Length (chunked), the size is counted while reading."""

    def chunks():
        yield b'{"batch": [], "padding": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    headers = {"content-type": "application/json", **alice.headers}
    response = client.post(UPLOAD, content=chunks(), headers=headers)
    _assert_error(response, 413, "payload_too_large")


def test_an_invalid_content_length_is_400(client: TestClient, alice: Reader) -> None:
    response = upload_raw(client, alice, b'{"batch": []}', **{"content-length": "abc"})
    _assert_error(response, 400, "invalid_content_length")


def test_a_non_json_body_is_415(client: TestClient, alice: Reader) -> None:
    response = upload_raw(client, alice, b'{"batch": []}', **{"content-type": "text/plain"})
    _assert_error(response, 415, "unsupported_media_type")


def test_upload_needs_an_access_token(client: TestClient, sql) -> None:
    body = {"batch": [entry("PUT", new_id(), {"title": "T"})]}
    _assert_error(client.post(UPLOAD, json=body), 401, "unauthorized")
    bad = client.post(UPLOAD, json=body, headers={"Authorization": "Bearer nope"})
    _assert_error(bad, 401, "invalid_token")
    assert count_books(sql) == 0
