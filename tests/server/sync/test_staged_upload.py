"""Staged uploads: a transaction too large for one request arrives in parts and applies as one."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from papyrus.server.app import create_app
from papyrus.server.config import Settings
from papyrus.server.sync import staging
from papyrus.server.sync.validation import MAX_BODY_BYTES, MAX_OPERATIONS
from tests.server.sync.conftest import Reader, count_books, entry, new_id

PARTS = "/v1/sync/powersync-upload/parts"


def books(n: int, first_op: int = 1, title: str = "Book") -> list[dict[str, Any]]:
    return [entry("PUT", new_id(), {"title": f"{title} {i}"}, op_id=first_op + i) for i in range(n)]


def split(batch: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def send(
    client: TestClient,
    reader: Reader,
    upload_id: str,
    index: int,
    count: int,
    batch: list[dict[str, Any]],
    tx_id: int | None = 7,
) -> Any:
    body = {"upload_id": upload_id, "index": index, "count": count, "tx_id": tx_id, "batch": batch}
    return client.post(PARTS, json=body, headers=reader.headers)


def send_all(client: TestClient, reader: Reader, upload_id: str, parts: list[list[Any]]) -> Any:
    for index, part in enumerate(parts[:-1]):
        response = send(client, reader, upload_id, index, len(parts), part)
        assert response.status_code == 202, response.text
        assert response.json() == {
            "status": "staged",
            "upload_id": upload_id,
            "received": index + 1,
            "count": len(parts),
        }
    return send(client, reader, upload_id, len(parts) - 1, len(parts), parts[-1])


def staged_parts(sql) -> int:
    return sql("SELECT count(*) FROM sync_upload_parts")[0][0]


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_a_transaction_sent_in_parts_is_applied_whole_when_the_last_part_arrives(
    client: TestClient, alice: Reader, sql
) -> None:
    batch = books(2500)
    parts = split(batch, MAX_OPERATIONS)
    upload_id = str(uuid.uuid4())
    for index, part in enumerate(parts[:-1]):
        assert send(client, alice, upload_id, index, len(parts), part).status_code == 202
        assert count_books(sql) == 0, "nothing is applied before the last part"
    response = send(client, alice, upload_id, len(parts) - 1, len(parts), parts[-1])
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "applied", "applied": 2500}
    assert count_books(sql) == 2500
    assert sql("SELECT count(*) FROM books WHERE owner_user_id = %s", (alice.user_id,)) == [(2500,)]
    assert staged_parts(sql) == 0


def test_operations_apply_in_order_across_parts(client: TestClient, alice: Reader, sql) -> None:
    row = new_id()
    parts = [
        [entry("PUT", row, {"title": "First", "rating": 2}, op_id=1)],
        [entry("PATCH", row, {"title": "Second"}, op_id=2)],
        [entry("DELETE", row, op_id=3), entry("PUT", row, {"title": "Third"}, op_id=4)],
    ]
    assert send_all(client, alice, str(uuid.uuid4()), parts).status_code == 200
    assert sql("SELECT title, rating FROM books") == [("Third", None)]


def test_one_invalid_entry_rejects_the_whole_staged_transaction(
    client: TestClient, alice: Reader, sql
) -> None:
    batch = books(2100)
    batch[1500]["data"]["rating"] = 7  # the server allows 1..5
    response = send_all(client, alice, str(uuid.uuid4()), split(batch, MAX_OPERATIONS))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "rejected" and body["applied"] == 0
    assert [(r["op_id"], r["code"]) for r in body["rejections"]] == [(1501, "invalid_value")]
    assert count_books(sql) == 0, "nothing of a rejected transaction is applied"
    assert staged_parts(sql) == 0, "a verdict is final: the parts are gone"
    assert sql("SELECT op_id, code FROM sync_rejections") == [(1501, "invalid_value")]


def test_a_restart_between_parts_loses_nothing_and_applies_once(
    settings: Settings, alice: Reader, sql
) -> None:
    batch = books(1800)
    parts = split(batch, 600)
    upload_id = str(uuid.uuid4())
    with TestClient(create_app(settings)) as before:
        assert send(before, alice, upload_id, 0, 3, parts[0]).status_code == 202
        assert send(before, alice, upload_id, 1, 3, parts[1]).status_code == 202
    assert staged_parts(sql) == 2  # durable, not held by the process that received them
    with TestClient(create_app(settings)) as after:
        response = send(after, alice, upload_id, 2, 3, parts[2])
    assert response.json() == {"status": "applied", "applied": 1800}
    ids = sorted(e["id"] for e in batch)
    assert [str(r[0]) for r in sql("SELECT id FROM books ORDER BY id::text")] == ids
    assert staged_parts(sql) == 0


def test_a_failure_while_applying_leaves_the_parts_staged_and_nothing_applied(
    client: TestClient, alice: Reader, sql, monkeypatch
) -> None:
    """The parts are dropped in the database transaction that applies them: a failure after
    the writes (here the connection dies) leaves neither the writes nor a gap in the parts."""
    from papyrus.server.sync import service

    real_apply = service._apply

    async def fail_after_writing(db, user_id, plans):
        await real_apply(db, user_id, plans)
        raise OperationalError("COMMIT", {}, psycopg.OperationalError("server closed"))

    monkeypatch.setattr(service, "_apply", fail_after_writing)
    parts = split(books(1500), MAX_OPERATIONS)
    upload_id = str(uuid.uuid4())
    response = send_all(client, alice, upload_id, parts)
    assert_error(response, 503, "service_unavailable")
    assert count_books(sql) == 0
    assert staged_parts(sql) == 1, "part 0 is still staged"

    monkeypatch.setattr(service, "_apply", real_apply)
    retry = send(client, alice, upload_id, 1, 2, parts[1])  # the same last part, sent again
    assert retry.json() == {"status": "applied", "applied": 1500}
    assert count_books(sql) == 1500 and staged_parts(sql) == 0


def test_a_lost_answer_to_the_last_part_means_resend_from_part_0_and_one_copy(
    client: TestClient, alice: Reader, sql
) -> None:
    batch = books(1500)
    parts = split(batch, MAX_OPERATIONS)
    upload_id = str(uuid.uuid4())
    assert send_all(client, alice, upload_id, parts).status_code == 200  # the 200 is "lost"

    retry = send(client, alice, upload_id, 1, 2, parts[1])
    error = assert_error(retry, 409, "upload_parts_missing")
    assert "part 0" in error["message"]
    assert error["details"] == {"upload_id": upload_id, "first_missing_index": 0}
    assert count_books(sql) == 1500

    assert send_all(client, alice, upload_id, parts).json() == {
        "status": "applied",
        "applied": 1500,
    }
    assert count_books(sql) == 1500, "the replay wrote the same rows, not copies"
    assert staged_parts(sql) == 0


def test_a_part_sent_again_replaces_itself(client: TestClient, alice: Reader, sql) -> None:
    parts = split(books(30), 10)
    upload_id = str(uuid.uuid4())
    assert send(client, alice, upload_id, 0, 3, parts[0]).status_code == 202
    assert send(client, alice, upload_id, 1, 3, parts[1]).status_code == 202
    assert send(client, alice, upload_id, 1, 3, parts[1]).status_code == 202  # a lost 202
    assert send(client, alice, upload_id, 2, 3, parts[2]).json()["applied"] == 30
    assert count_books(sql) == 30


def test_part_0_restarts_an_upload(client: TestClient, alice: Reader, sql) -> None:
    upload_id = str(uuid.uuid4())
    stale = split(books(4, title="Stale"), 2)
    assert send(client, alice, upload_id, 0, 3, stale[0]).status_code == 202
    assert send(client, alice, upload_id, 1, 3, stale[1]).status_code == 202
    fresh = split(books(4, title="Fresh"), 2)
    assert send_all(client, alice, upload_id, fresh).json()["applied"] == 4
    assert {r[0].split()[0] for r in sql("SELECT title FROM books")} == {"Fresh"}


def test_a_part_whose_predecessors_are_missing_is_409(
    client: TestClient, alice: Reader, sql
) -> None:
    upload_id = str(uuid.uuid4())
    assert send(client, alice, upload_id, 0, 4, books(1)).status_code == 202
    error = assert_error(
        send(client, alice, upload_id, 2, 4, books(1)), 409, "upload_parts_missing"
    )
    assert error["details"]["first_missing_index"] == 1
    assert_error(
        send(client, alice, str(uuid.uuid4()), 3, 4, books(1)), 409, "upload_parts_missing"
    )
    assert count_books(sql) == 0


@pytest.mark.parametrize(
    ("change", "value"), [("count", 5), ("tx_id", 8), ("tx_id", None)], ids=str
)
def test_a_part_that_disagrees_with_the_earlier_parts_is_409(
    client: TestClient, alice: Reader, sql, change: str, value: Any
) -> None:
    upload_id = str(uuid.uuid4())
    assert send(client, alice, upload_id, 0, 3, books(1), tx_id=7).status_code == 202
    arguments: dict[str, Any] = {"count": 3, "tx_id": 7, change: value}
    response = send(
        client, alice, upload_id, 1, arguments["count"], books(1), tx_id=arguments["tx_id"]
    )
    assert_error(response, 409, "upload_part_mismatch")
    assert staged_parts(sql) == 1 and count_books(sql) == 0


def test_another_user_can_neither_complete_nor_disturb_a_staged_upload(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    batch = books(30)
    parts = split(batch, 10)
    upload_id = str(uuid.uuid4())
    assert send(client, alice, upload_id, 0, 3, parts[0]).status_code == 202
    assert send(client, alice, upload_id, 1, 3, parts[1]).status_code == 202

    # Bob knows Alice's upload id: his last part finds none of her parts.
    bobs_last = books(10, first_op=21)
    assert_error(send(client, bob, upload_id, 2, 3, bobs_last), 409, "upload_parts_missing")
    # Part 0 under her id starts Bob's own upload; hers stays staged.
    assert send(client, bob, upload_id, 0, 3, books(1)).status_code == 202
    assert count_books(sql) == 0

    assert send(client, alice, upload_id, 2, 3, parts[2]).json()["applied"] == 30
    owners = sql("SELECT DISTINCT owner_user_id::text FROM books")
    assert owners == [(alice.user_id,)]
    assert count_books(sql) == 30
    # Bob's own part 0 is still staged (and only his).
    assert sql("SELECT user_id::text FROM sync_upload_parts") == [(bob.user_id,)]


def test_parts_that_touch_another_users_rows_reject_the_whole(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    hers = new_id()
    assert send_all(client, alice, str(uuid.uuid4()), [[entry("PUT", hers, {"title": "A"})]])
    parts = [books(5), [entry("PUT", hers, {"title": "Stolen"}, op_id=6)]]
    body = send_all(client, bob, str(uuid.uuid4()), parts).json()
    assert body["status"] == "rejected"
    assert [r["code"] for r in body["rejections"]] == ["forbidden"]
    assert sql("SELECT title, owner_user_id::text FROM books") == [("A", alice.user_id)]


def test_an_upload_needs_a_signed_in_caller(client: TestClient) -> None:
    body = {"upload_id": str(uuid.uuid4()), "index": 0, "count": 2, "batch": books(1)}
    assert_error(client.post(PARTS, json=body), 401, "unauthorized")


def _envelope(**changes: Any) -> bytes:
    # Fixed ids: the bodies become test ids, which must be the same in every collection.
    body: dict[str, Any] = {
        "upload_id": "5b0e7c52-3f1d-4c1e-9a43-6f2d8e0b7a11",
        "index": 0,
        "count": 2,
        "tx_id": 7,
        "batch": [entry("PUT", "0d6f1a9e-2b7c-4e58-8c3a-91f4b2d6e702", {"title": "T"})],
    }
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return json.dumps(body).encode()


_DROP = object()


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[]", 422, "invalid_upload_part"),
        (b'{"batch": []}', 422, "invalid_upload_part"),
        (_envelope(upload_id=_DROP), 422, "invalid_upload_part"),
        (_envelope(upload_id="not-a-uuid"), 422, "invalid_upload_part"),
        (_envelope(upload_id=12), 422, "invalid_upload_part"),
        (_envelope(count=0), 422, "invalid_upload_part"),
        (_envelope(count=staging.MAX_PARTS + 1), 422, "invalid_upload_part"),
        (_envelope(count="2"), 422, "invalid_upload_part"),
        (_envelope(index=2), 422, "invalid_upload_part"),  # out of range for count 2
        (_envelope(index=-1), 422, "invalid_upload_part"),
        (_envelope(index=True), 422, "invalid_upload_part"),
        (_envelope(index=0.0), 422, "invalid_upload_part"),
        (_envelope(tx_id="7"), 422, "invalid_upload_part"),
        (_envelope(tx_id=2**63), 422, "invalid_upload_part"),
        (_envelope(batch=[]), 422, "invalid_upload_part"),
        (_envelope(batch={"op": "PUT"}), 422, "invalid_upload_part"),
        (_envelope(batch=_DROP), 422, "invalid_upload_part"),
        (_envelope(extra="x"), 422, "invalid_upload_part"),
        (
            _envelope(batch=[entry("DELETE", new_id())] * (MAX_OPERATIONS + 1)),
            413,
            "too_many_operations",
        ),
    ],
)
def test_a_malformed_part_is_a_4xx_in_the_error_shape_and_stages_nothing(
    client: TestClient, alice: Reader, sql, raw: bytes, status: int, code: str
) -> None:
    headers = {"content-type": "application/json", **alice.headers}
    assert_error(client.post(PARTS, content=raw, headers=headers), status, code)
    assert staged_parts(sql) == 0


def test_a_part_over_the_one_request_byte_limit_is_413(
    client: TestClient, alice: Reader, sql
) -> None:
    batch = [
        entry("PUT", new_id(), {"title": "T", "description": "d" * 20_000}) for _ in range(110)
    ]
    raw = _envelope(batch=batch)
    assert len(raw) > MAX_BODY_BYTES
    headers = {"content-type": "application/json", **alice.headers}
    assert_error(client.post(PARTS, content=raw, headers=headers), 413, "payload_too_large")
    assert staged_parts(sql) == 0


def test_too_many_staged_uploads_per_user_are_refused(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    open_ids = [str(uuid.uuid4()) for _ in range(staging.MAX_STAGED_UPLOADS)]
    for upload_id in open_ids:
        assert send(client, alice, upload_id, 0, 2, books(1)).status_code == 202
    refused = send(client, alice, str(uuid.uuid4()), 0, 2, books(1))
    error = assert_error(refused, 429, "too_many_staged_uploads")
    assert error["details"] == {"max_staged_uploads": staging.MAX_STAGED_UPLOADS}
    assert refused.headers["retry-after"]
    # Restarting one of them, finishing one, and other users are all still fine.
    assert send(client, alice, open_ids[0], 0, 2, books(1)).status_code == 202
    assert send(client, bob, str(uuid.uuid4()), 0, 2, books(1)).status_code == 202
    assert send(client, alice, open_ids[0], 1, 2, books(1, first_op=2)).status_code == 200
    assert send(client, alice, str(uuid.uuid4()), 0, 2, books(1)).status_code == 202
    # A one-part upload stages nothing, so it is never refused.
    assert send(client, alice, str(uuid.uuid4()), 0, 1, books(1)).status_code == 200


def test_expired_parts_are_missing_and_swept(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    upload_id = str(uuid.uuid4())
    assert send(client, alice, upload_id, 0, 2, books(1)).status_code == 202
    assert send(client, bob, str(uuid.uuid4()), 0, 2, books(1)).status_code == 202
    sql("UPDATE sync_upload_parts SET created_at = now() - interval '25 hours'")

    assert_error(send(client, alice, upload_id, 1, 2, books(1)), 409, "upload_parts_missing")
    assert count_books(sql) == 0
    # Any upload that starts sweeps expired parts, whoever staged them.
    assert send(client, alice, str(uuid.uuid4()), 0, 2, books(1)).status_code == 202
    assert sql("SELECT user_id::text FROM sync_upload_parts") == [(alice.user_id,)]


@pytest.mark.parametrize("limit", ["MAX_TRANSACTION_OPERATIONS", "MAX_TRANSACTION_BYTES"])
def test_a_transaction_over_the_whole_limit_is_413_and_its_parts_are_dropped(
    client: TestClient, alice: Reader, sql, monkeypatch, limit: str
) -> None:
    small = {"MAX_TRANSACTION_OPERATIONS": 25, "MAX_TRANSACTION_BYTES": 1500}[limit]
    monkeypatch.setattr(staging, limit, small)
    parts = split(books(30), 10)
    upload_id = str(uuid.uuid4())
    assert send(client, alice, upload_id, 0, 3, parts[0]).status_code == 202
    response = send(client, alice, upload_id, 1, 3, parts[1])
    if limit == "MAX_TRANSACTION_OPERATIONS":
        assert response.status_code == 202
        response = send(client, alice, upload_id, 2, 3, parts[2])
    error = assert_error(response, 413, "transaction_too_large")
    assert set(error["details"]) == {"max_operations", "max_bytes"}
    assert staged_parts(sql) == 0 and count_books(sql) == 0


def test_one_request_uploads_are_unchanged(client: TestClient, alice: Reader, sql) -> None:
    batch = books(3)
    response = client.post(
        "/v1/sync/powersync-upload", json={"batch": batch}, headers=alice.headers
    )
    assert response.json() == {"status": "applied", "applied": 3}
    assert staged_parts(sql) == 0
