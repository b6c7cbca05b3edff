"""The upload path: PUT/PATCH/DELETE semantics, ordering, atomicity, replays and rejections."""

from __future__ import annotations

from datetime import datetime

from fastapi.testclient import TestClient

from tests.server.sync.conftest import (
    Reader,
    as_json_text,
    book_row,
    count_books,
    entry,
    new_id,
    transaction,
    upload,
)


def test_put_from_a_sqlite_client_inserts_a_row_owned_by_the_caller(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    data = {
        # What a SQLite client uploads for a row it synced: every non-null column, as stored.
        "owner_user_id": alice.user_id,
        "title": "Middlemarch",
        "subtitle": "A Study of Provincial Life",
        "author": "George Eliot",
        "co_authors": as_json_text(["Nobody"]),
        "isbn": "0141439548",
        "isbn13": "978-0141439549",
        "publisher": "Penguin",
        "language": "en",
        "page_count": 880,
        "description": "Café — naïve ✓ unicode is fine.",
        "cover_image_url": "https://covers.example/1.jpg",
        "reading_status": "reading",
        "current_page": 12,
        "current_position": 0.25,
        "current_cfi": "epubcfi(/6/4!/4/2/1:0)",
        "is_favorite": 1,
        "rating": 5,
        "custom_metadata": as_json_text({"shelf": "classics", "n": [1, 2]}),
        "added_at": "2001-01-01T00:00:00Z",
        "updated_at": "2001-01-01T00:00:00Z",
    }
    response = upload(client, alice, transaction(entry("PUT", row_id, data)))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "applied", "applied": 1}

    row = book_row(sql, row_id)
    assert row is not None
    assert row["owner_user_id"] == alice.user_id
    assert row["co_authors"] == ["Nobody"]
    assert row["custom_metadata"] == {"shelf": "classics", "n": [1, 2]}
    assert row["is_favorite"] is True
    assert row["current_position"] == 0.25
    assert row["description"] == "Café — naïve ✓ unicode is fine."
    assert not row["added_at"].startswith("2001"), "added_at is server-set"
    assert not row["updated_at"].startswith("2001"), "updated_at is server-set"


def test_put_without_owner_is_owned_by_the_caller_and_json_values_are_accepted(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    data = {"title": "T", "co_authors": ["A", "B"], "custom_metadata": {"k": True}}
    assert upload(client, alice, transaction(entry("PUT", row_id, data))).status_code == 200
    row = book_row(sql, row_id)
    assert row["owner_user_id"] == alice.user_id
    assert row["co_authors"] == ["A", "B"]
    assert row["custom_metadata"] == {"k": True}
    assert row["is_favorite"] is False


def test_put_replaces_the_whole_row_and_keeps_added_at(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    first = {"title": "Old", "author": "A", "rating": 3, "is_favorite": True, "co_authors": ["x"]}
    upload(client, alice, transaction(entry("PUT", row_id, first)))
    before = book_row(sql, row_id)

    response = upload(client, alice, transaction(entry("PUT", row_id, {"title": "New"})))
    assert response.json() == {"status": "applied", "applied": 1}
    after = book_row(sql, row_id)
    assert after["title"] == "New"
    assert after["author"] is None and after["rating"] is None and after["co_authors"] is None
    assert after["is_favorite"] is False
    assert after["added_at"] == before["added_at"]
    assert datetime.fromisoformat(after["updated_at"]) > datetime.fromisoformat(
        before["updated_at"]
    )


def test_patch_changes_only_the_listed_columns_and_null_clears(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    full = {"title": "T", "author": "A", "page_count": 10, "co_authors": ["x"], "rating": 2}
    upload(client, alice, transaction(entry("PUT", row_id, full)))
    patch = {"author": None, "co_authors": None, "current_position": 1, "is_favorite": 1}
    response = upload(client, alice, transaction(entry("patch", row_id, patch)))
    assert response.json() == {"status": "applied", "applied": 1}
    row = book_row(sql, row_id)
    assert row["title"] == "T" and row["page_count"] == 10 and row["rating"] == 2
    assert row["author"] is None and row["co_authors"] is None
    assert row["current_position"] == 1.0 and row["is_favorite"] is True


def test_a_late_patch_of_a_deleted_row_is_dropped_and_reported(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    upload(client, alice, transaction(entry("PUT", row_id, {"title": "T"})))
    assert upload(client, alice, transaction(entry("DELETE", row_id))).status_code == 200
    response = upload(client, alice, transaction(entry("PATCH", row_id, {"title": "Back"})))
    assert response.json() == {
        "status": "applied",
        "applied": 0,
        "dropped": [
            {
                "op_id": 1,
                "id": row_id,
                "code": "row_deleted",
                "message": "The row was deleted before this change arrived.",
            }
        ],
    }
    assert book_row(sql, row_id) is None
    [recorded] = client.get("/v1/sync/rejections", headers=alice.headers).json()["rejections"]
    assert (recorded["row_id"], recorded["code"], recorded["op"]) == (
        row_id,
        "row_deleted",
        "PATCH",
    )


def test_a_patch_of_a_row_that_never_existed_is_a_successful_no_op(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    response = upload(client, alice, transaction(entry("PATCH", row_id, {"title": "Ghost"})))
    assert response.json() == {"status": "applied", "applied": 1}
    assert book_row(sql, row_id) is None


def test_delete_of_an_absent_row_succeeds(client: TestClient, alice: Reader, sql) -> None:
    response = upload(client, alice, transaction(entry("delete", new_id())))
    assert response.json() == {"status": "applied", "applied": 1}
    assert count_books(sql) == 0


def test_operations_on_one_id_apply_in_order(client: TestClient, alice: Reader, sql) -> None:
    gone, patched, reborn, untouched = new_id(), new_id(), new_id(), new_id()
    upload(client, alice, transaction(entry("PUT", reborn, {"title": "R0", "author": "old"})))
    original_added = book_row(sql, reborn)["added_at"]
    body = transaction(
        entry("PUT", gone, {"title": "G"}),
        entry("PATCH", gone, {"title": "G2"}),
        entry("DELETE", gone),
        entry("PUT", patched, {"title": "P", "rating": 1}),
        entry("PATCH", patched, {"rating": 4}),
        entry("PATCH", patched, {"author": "Z"}),
        entry("DELETE", reborn),
        entry("PATCH", reborn, {"title": "ignored: row deleted above"}),
        entry("PUT", reborn, {"title": "R1"}),
        entry("PATCH", untouched, {"title": "no such row"}),
    )
    response = upload(client, alice, body)
    assert response.json() == {"status": "applied", "applied": 10}
    assert book_row(sql, gone) is None
    row = book_row(sql, patched)
    assert (row["title"], row["rating"], row["author"]) == ("P", 4, "Z")
    row = book_row(sql, reborn)
    assert row["title"] == "R1" and row["author"] is None
    assert row["added_at"] != original_added, "deleted then created again: a new row"
    assert book_row(sql, untouched) is None


def test_the_other_crud_entry_fields_and_null_tx_id_are_tolerated(
    client: TestClient, alice: Reader, sql
) -> None:
    row_id = new_id()
    item = entry("put", row_id, {"title": "T"}, tx_id=None, old={"title": "before"}, metadata="m")
    response = upload(client, alice, {"batch": [item]})
    assert response.json() == {"status": "applied", "applied": 1}
    assert book_row(sql, row_id)["title"] == "T"


def test_a_transaction_whose_last_op_is_invalid_applies_nothing(
    client: TestClient, alice: Reader, sql
) -> None:
    existing = new_id()
    upload(client, alice, transaction(entry("PUT", existing, {"title": "Keep"})))
    fresh, bad = new_id(), new_id()
    body = transaction(
        entry("PUT", fresh, {"title": "New"}, op_id=40),
        entry("PATCH", existing, {"title": "Changed"}),
        entry("DELETE", existing),
        entry("PUT", bad, {"title": "Bad", "rating": 6}),
    )
    response = upload(client, alice, body)
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "rejected" and result["applied"] == 0
    assert result["rejections"] == [
        {
            "op_id": 43,
            "id": bad,
            "code": "invalid_value",
            "message": "rating: must be an integer from 1 to 5.",
        }
    ]
    assert book_row(sql, fresh) is None
    assert book_row(sql, existing)["title"] == "Keep"

    listed = client.get("/v1/sync/rejections", headers=alice.headers)
    assert listed.status_code == 200
    [rejection] = listed.json()["rejections"]
    assert rejection["op_id"] == 43 and rejection["tx_id"] == 7
    assert rejection["row_id"] == bad and rejection["op"] == "PUT"
    assert rejection["code"] == "invalid_value"


def test_every_invalid_op_of_a_transaction_is_reported(client: TestClient, alice: Reader) -> None:
    body = transaction(
        entry("PUT", new_id(), {"title": ""}),
        entry("PUT", new_id(), {"title": "ok"}),
        entry("PATCH", "not-a-uuid", {"title": "x"}),
    )
    result = upload(client, alice, body).json()
    assert [r["code"] for r in result["rejections"]] == ["invalid_value", "invalid_id"]
    assert [r["op_id"] for r in result["rejections"]] == [1, 3]


def test_replaying_an_applied_transaction_is_harmless(
    client: TestClient, alice: Reader, sql
) -> None:
    a, b = new_id(), new_id()
    upload(client, alice, transaction(entry("PUT", b, {"title": "B"})))
    body = transaction(
        entry("PUT", a, {"title": "A", "rating": 1}),
        entry("PATCH", a, {"rating": 2}),
        entry("DELETE", b),
    )
    first = upload(client, alice, body)
    state = book_row(sql, a)
    second = upload(client, alice, body)
    assert first.json() == second.json() == {"status": "applied", "applied": 3}
    replayed = book_row(sql, a)
    assert {k: v for k, v in replayed.items() if k != "updated_at"} == {
        k: v for k, v in state.items() if k != "updated_at"
    }
    assert replayed["rating"] == 2
    assert count_books(sql) == 1


def test_an_empty_batch_is_applied(client: TestClient, alice: Reader) -> None:
    assert upload(client, alice, {"batch": []}).json() == {"status": "applied", "applied": 0}


def test_rejections_are_listed_newest_first_per_user_with_paging(
    client: TestClient, alice: Reader, bob: Reader
) -> None:
    for op_id in (1, 2, 3):
        upload(client, alice, {"batch": [entry("PUT", new_id(), {"title": 5}, op_id=op_id)]})
    upload(client, bob, {"batch": [entry("PUT", new_id(), {}, op_id=99)]})

    page = client.get("/v1/sync/rejections?limit=2", headers=alice.headers).json()["rejections"]
    assert [r["op_id"] for r in page] == [3, 2]
    older = client.get(
        f"/v1/sync/rejections?before={page[-1]['id']}", headers=alice.headers
    ).json()["rejections"]
    assert [r["op_id"] for r in older] == [1]
    [bobs] = client.get("/v1/sync/rejections", headers=bob.headers).json()["rejections"]
    assert bobs["op_id"] == 99 and bobs["code"] == "missing_field"
    assert client.get("/v1/sync/rejections").status_code == 401
    bad = client.get("/v1/sync/rejections?limit=0", headers=alice.headers)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"


def test_old_rejections_are_pruned(client: TestClient, alice: Reader, monkeypatch) -> None:
    from papyrus.server.sync import service

    monkeypatch.setattr(service, "REJECTIONS_KEPT", 2)
    for op_id in (1, 2, 3):
        upload(client, alice, {"batch": [entry("PUT", new_id(), {"title": 5}, op_id=op_id)]})
    listed = client.get("/v1/sync/rejections", headers=alice.headers).json()["rejections"]
    assert [r["op_id"] for r in listed] == [3, 2]


def test_deleting_a_user_deletes_their_books(client: TestClient, alice: Reader, sql) -> None:
    upload(client, alice, transaction(entry("PUT", new_id(), {"title": "T"})))
    upload(client, alice, {"batch": [entry("PUT", new_id(), {})]})
    sql("DELETE FROM users WHERE id = %s", (alice.user_id,))
    assert count_books(sql) == 0
    assert sql("SELECT count(*) FROM sync_rejections")[0][0] == 0


def test_a_replayed_rejected_transaction_is_listed_once(
    client: TestClient, alice: Reader, sql
) -> None:
    """A client whose 200 was lost sends the transaction again; it gets the same answer."""
    body = transaction(entry("PUT", new_id(), {"title": "Fine"}), entry("PUT", new_id(), {}))
    first, again = upload(client, alice, body), upload(client, alice, body)
    assert first.json()["status"] == again.json()["status"] == "rejected"
    assert first.json()["rejections"] == again.json()["rejections"]
    assert sql("SELECT count(*) FROM sync_rejections")[0][0] == 1

    # The same ids from a later transaction, or long after, are a new rejection.
    upload(client, alice, {"batch": [{**e, "tx_id": 8} for e in body["batch"]]})
    assert sql("SELECT count(*) FROM sync_rejections")[0][0] == 2
    sql("UPDATE sync_rejections SET created_at = now() - interval '2 days'")
    upload(client, alice, body)
    assert sql("SELECT count(*) FROM sync_rejections")[0][0] == 3
