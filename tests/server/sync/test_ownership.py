"""A user can never create, change or delete another user's row through the upload path."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.server.sync.conftest import (
    Reader,
    book_row,
    entry,
    new_id,
    transaction,
    upload,
)


@pytest.fixture
def bobs_book(client: TestClient, bob: Reader, sql) -> str:
    row_id = new_id()
    body = transaction(entry("PUT", row_id, {"title": "Bob's", "rating": 5}))
    assert upload(client, bob, body).json()["status"] == "applied"
    return row_id


@pytest.mark.parametrize(
    "attack",
    [
        lambda rid: entry("PUT", rid, {"title": "Stolen"}),
        lambda rid: entry("PATCH", rid, {"title": "Defaced"}),
        lambda rid: entry("DELETE", rid),
    ],
    ids=["put", "patch", "delete"],
)
def test_another_users_id_is_rejected_and_untouched(
    client: TestClient, alice: Reader, bob: Reader, bobs_book: str, sql, attack
) -> None:
    mine = new_id()
    body = transaction(entry("PUT", mine, {"title": "Mine"}), attack(bobs_book))
    result = upload(client, alice, body).json()
    assert result["status"] == "rejected" and result["applied"] == 0
    assert [(r["id"], r["code"]) for r in result["rejections"]] == [(bobs_book, "forbidden")]
    row = book_row(sql, bobs_book)
    assert row["owner_user_id"] == bob.user_id and row["title"] == "Bob's"
    assert book_row(sql, mine) is None


def test_owner_user_id_of_someone_else_is_rejected(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    row_id = new_id()
    body = transaction(entry("PUT", row_id, {"title": "T", "owner_user_id": bob.user_id}))
    result = upload(client, alice, body).json()
    assert result["rejections"][0]["code"] == "owner_mismatch"
    assert book_row(sql, row_id) is None

    upload(client, alice, transaction(entry("PUT", row_id, {"title": "T"})))
    patch = transaction(entry("PATCH", row_id, {"owner_user_id": bob.user_id}))
    assert upload(client, alice, patch).json()["rejections"][0]["code"] == "owner_mismatch"
    assert book_row(sql, row_id)["owner_user_id"] == alice.user_id


def test_an_id_inserted_by_another_user_after_the_lock_is_not_overwritten(
    client: TestClient, alice: Reader, bob: Reader, bobs_book: str, sql, monkeypatch
) -> None:
    """The upsert's owner guard holds even when the row was invisible to the ownership check."""
    from papyrus.server.sync import service

    async def sees_nothing(
        db, owner, plans, everything=False
    ):  # as if Bob's insert committed after our lock
        return {}, set()

    monkeypatch.setattr(service, "_load", sees_nothing)
    mine = new_id()
    body = transaction(
        entry("PUT", mine, {"title": "Mine"}), entry("PUT", bobs_book, {"title": "X"})
    )
    result = upload(client, alice, body).json()
    assert result["status"] == "rejected"
    assert [(r["id"], r["code"]) for r in result["rejections"]] == [(bobs_book, "forbidden")]
    assert book_row(sql, bobs_book)["title"] == "Bob's"
    assert book_row(sql, mine) is None


def test_patch_and_delete_statements_only_touch_the_callers_rows(
    client: TestClient, alice: Reader, bob: Reader, bobs_book: str, sql, monkeypatch
) -> None:
    from papyrus.server.sync import service

    async def sees_nothing(db, owner, plans, everything=False):
        return {}, set()

    monkeypatch.setattr(service, "_load", sees_nothing)
    upload(client, alice, transaction(entry("PATCH", bobs_book, {"title": "X"})))
    upload(client, alice, transaction(entry("DELETE", bobs_book)))
    row = book_row(sql, bobs_book)
    assert row is not None and row["title"] == "Bob's"
