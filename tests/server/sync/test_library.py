"""Upload semantics across the library's tables: atomic multi-table transactions, references,
cascades, late writes to deleted rows, memberships, unique names, cycles, closed sessions and
the set-based cost of applying a transaction."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from tests.server.sync.conftest import Reader, entry, new_id, transaction, upload

LOCATION = {"cfi": "epubcfi(/6/4!/4/2)", "fraction": 0.1}


def put(table: str, row_id: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return entry("PUT", row_id, data, type=table, **extra)


def patch(table: str, row_id: str, data: dict[str, Any]) -> dict[str, Any]:
    return entry("PATCH", row_id, data, type=table)


def delete(table: str, row_id: str) -> dict[str, Any]:
    return entry("DELETE", row_id, type=table)


def row(sql, table: str, row_id: str) -> dict[str, Any] | None:
    found = sql(f"SELECT to_jsonb(t) FROM {table} t WHERE id::text = %s", (row_id,))
    return found[0][0] if found else None


def send(client: TestClient, reader: Reader, *entries: dict[str, Any]) -> dict[str, Any]:
    response = upload(client, reader, transaction(*entries))
    assert response.status_code == 200, response.text
    return response.json()


def library(book: str, shelf: str, tag: str, session: str) -> list[dict[str, Any]]:
    """A book made offline with everything that hangs off it."""
    return [
        put("books", book, {"title": "Dune", "reading_status": "reading"}),
        put("shelves", shelf, {"name": "Sci-fi", "color": "#112233"}),
        put("tags", tag, {"name": "classic"}),
        put("book_shelves", f"{book}:{shelf}", {"book_id": book, "shelf_id": shelf}),
        put("book_tags", f"{book}:{tag}", {"book_id": book, "tag_id": tag}),
        put(
            "annotations",
            new_id(),
            {"book_id": book, "selected_text": "Fear", "location": LOCATION},
        ),
        put("notes", new_id(), {"book_id": book, "content": "Spice", "pinned": 1}),
        put("bookmarks", new_id(), {"book_id": book, "location": {"page": 12}}),
        put(
            "reading_sessions",
            session,
            {"book_id": book, "started_at": "2026-01-01T10:00:00Z", "pages_read": 30},
        ),
    ]


CHILD_TABLES = (
    "book_shelves",
    "book_tags",
    "annotations",
    "notes",
    "bookmarks",
    "reading_sessions",
)


def count(sql, table: str) -> int:
    return sql(f"SELECT count(*) FROM {table}")[0][0]


def test_one_transaction_across_tables_is_applied_whole(
    client: TestClient, alice: Reader, sql
) -> None:
    book, shelf, tag, session = new_id(), new_id(), new_id(), new_id()
    entries = library(book, shelf, tag, session)
    assert send(client, alice, *entries) == {"status": "applied", "applied": len(entries)}
    for table in ("books", "shelves", "tags", *CHILD_TABLES):
        assert count(sql, table) == 1, table
    assert row(sql, "notes", entries[6]["id"])["pinned"] is True


def test_one_bad_operation_applies_nothing_in_any_table(
    client: TestClient, alice: Reader, sql
) -> None:
    entries = library(new_id(), new_id(), new_id(), new_id())
    entries.append(put("reading_goals", new_id(), {"kind": "chapters", "target": 3}))
    result = send(client, alice, *entries)
    assert result["status"] == "rejected"
    assert [r["code"] for r in result["rejections"]] == ["invalid_value"]
    for table in ("books", "shelves", "tags", *CHILD_TABLES):
        assert count(sql, table) == 0, table


def test_children_may_come_before_their_parents_in_a_transaction(
    client: TestClient, alice: Reader, sql
) -> None:
    entries = list(reversed(library(new_id(), new_id(), new_id(), new_id())))
    assert send(client, alice, *entries)["status"] == "applied"
    assert count(sql, "annotations") == 1


def test_a_reference_to_another_users_row_is_never_a_silent_link(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    bobs_book = new_id()
    send(client, bob, put("books", bobs_book, {"title": "Bob's"}))
    note = new_id()
    send(client, alice, put("notes", note, {"content": "mine"}))
    result = send(client, alice, patch("notes", note, {"book_id": bobs_book}))
    assert [(r["code"], r["id"]) for r in result["rejections"]] == [("invalid_reference", note)]
    assert row(sql, "notes", note)["book_id"] is None
    # Bob's book id cannot be learnt from the answer: a missing book reads the same.
    missing = send(client, alice, patch("notes", note, {"book_id": new_id()}))
    assert missing["rejections"][0]["message"] == result["rejections"][0]["message"]


def test_deleting_a_book_deletes_what_hangs_off_it_and_leaves_tombstones(
    client: TestClient, alice: Reader, sql
) -> None:
    book, shelf, tag, session = new_id(), new_id(), new_id(), new_id()
    send(client, alice, *library(book, shelf, tag, session))
    send(client, alice, patch("reading_sessions", session, {"ended_at": "2026-01-01T11:00:00Z"}))
    other = new_id()
    send(client, alice, put("books", other, {"title": "Other"}))

    assert send(client, alice, delete("books", book)) == {"status": "applied", "applied": 1}
    for table in CHILD_TABLES:
        assert count(sql, table) == 0, table
    assert count(sql, "shelves") == count(sql, "tags") == 1
    assert row(sql, "books", other) is not None
    tombstoned = dict(
        sql(
            "SELECT table_name, count(*) FROM sync_tombstones WHERE user_id = %s GROUP BY 1",
            (alice.user_id,),
        )
    )
    assert tombstoned == {"books": 1, **dict.fromkeys(CHILD_TABLES, 1)}


def test_late_writes_to_a_deleted_book_and_its_children_are_dropped_and_reported(
    client: TestClient, alice: Reader, sql
) -> None:
    book, shelf, highlight = new_id(), new_id(), new_id()
    send(
        client,
        alice,
        put("books", book, {"title": "Dune"}),
        put("shelves", shelf, {"name": "Later"}),
        put(
            "annotations", highlight, {"book_id": book, "selected_text": "x", "location": LOCATION}
        ),
    )
    send(client, alice, delete("books", book))  # device A

    other = new_id()
    late = [  # device B, offline meanwhile
        patch("books", book, {"rating": 5}),
        patch("annotations", highlight, {"note": "late"}),
        put("annotations", new_id(), {"book_id": book, "selected_text": "y", "location": LOCATION}),
        put("book_shelves", f"{book}:{shelf}", {"book_id": book, "shelf_id": shelf}),
        put("books", other, {"title": "Unrelated, kept"}),
        put("books", book, {"title": "Resurrected?"}),
    ]
    result = send(client, alice, *late)
    assert result["status"] == "applied" and result["applied"] == 1
    dropped = [(r["op_id"], r["code"]) for r in result["dropped"]]
    assert dropped == [
        (1, "row_deleted"),
        (2, "row_deleted"),
        (3, "parent_deleted"),
        (4, "parent_deleted"),
        (6, "row_deleted"),
    ]
    assert row(sql, "books", book) is None and row(sql, "annotations", highlight) is None
    assert count(sql, "annotations") == count(sql, "book_shelves") == 0
    assert row(sql, "books", other)["title"] == "Unrelated, kept"

    recorded = client.get("/v1/sync/rejections", headers=alice.headers).json()["rejections"]
    assert sorted((r["op_id"], r["code"]) for r in recorded) == sorted(dropped)
    # The client retries after a lost answer: the same answer, recorded once.
    assert send(client, alice, *late)["dropped"] == result["dropped"]
    assert count(sql, "sync_rejections") == len(dropped)
    assert count(sql, "books") == 1


def test_a_late_reference_to_a_deleted_series_is_cleared_not_dropped(
    client: TestClient, alice: Reader, sql
) -> None:
    series, book = new_id(), new_id()
    send(client, alice, put("series", series, {"name": "Dune Chronicles"}))
    send(client, alice, delete("series", series))
    result = send(client, alice, put("books", book, {"title": "Dune", "series_id": series}))
    assert result == {"status": "applied", "applied": 1}
    assert row(sql, "books", book)["series_id"] is None


def test_a_child_of_a_parent_deleted_in_the_same_transaction_is_dropped(
    client: TestClient, alice: Reader, sql
) -> None:
    book = new_id()
    send(client, alice, put("books", book, {"title": "Dune"}))
    result = send(
        client,
        alice,
        delete("books", book),
        put("bookmarks", new_id(), {"book_id": book, "location": {"page": 1}}),
    )
    assert result["applied"] == 1 and [r["code"] for r in result["dropped"]] == ["parent_deleted"]
    assert count(sql, "bookmarks") == 0


def test_rows_deleted_and_written_again_in_one_transaction_live_on(
    client: TestClient, alice: Reader, sql
) -> None:
    """Recreating a book deletes what hung off it (the cascade); what the same transaction
    writes again lives on, and later writes to it are not mistaken for late ones."""
    book, note, bookmark = new_id(), new_id(), new_id()
    send(
        client,
        alice,
        put("books", book, {"title": "Dune"}),
        put("notes", note, {"book_id": book, "content": "kept"}),
        put("bookmarks", bookmark, {"book_id": book, "location": {"page": 1}}),
    )
    again = send(
        client,
        alice,
        delete("books", book),
        put("books", book, {"title": "Dune, again"}),
        put("notes", note, {"book_id": book, "content": "written again"}),
    )
    assert again == {"status": "applied", "applied": 3}
    assert row(sql, "notes", note)["content"] == "written again"
    assert row(sql, "bookmarks", bookmark) is None  # not written again: deleted with the book
    later = send(
        client,
        alice,
        put("notes", note, {"book_id": book, "content": "later"}),
        patch("books", book, {"rating": 4}),
    )
    assert later == {"status": "applied", "applied": 2}
    assert row(sql, "notes", note)["content"] == "later"
    late = send(client, alice, patch("bookmarks", bookmark, {"label": "gone"}))
    assert [r["code"] for r in late["dropped"]] == ["row_deleted"]


def test_two_devices_shelving_the_same_book_converge_on_one_membership(
    client: TestClient, alice: Reader, sql
) -> None:
    book, shelf = new_id(), new_id()
    send(client, alice, put("books", book, {"title": "Dune"}), put("shelves", shelf, {"name": "S"}))
    pair = f"{book}:{shelf}"
    first = send(client, alice, put("book_shelves", pair, {"book_id": book, "shelf_id": shelf}))
    second = send(
        client,
        alice,
        put("book_shelves", pair.upper(), {"book_id": book, "shelf_id": shelf, "sort_order": 2}),
    )
    assert first == second == {"status": "applied", "applied": 1}
    assert sql("SELECT id, sort_order FROM book_shelves") == [(pair, 2)]

    # Removed, then put back later: a membership is a fact that can become true again.
    send(client, alice, delete("book_shelves", pair))
    late_patch = send(client, alice, patch("book_shelves", pair, {"sort_order": 7}))
    assert [r["code"] for r in late_patch["dropped"]] == ["row_deleted"]
    again = send(client, alice, put("book_shelves", pair, {"book_id": book, "shelf_id": shelf}))
    assert again == {"status": "applied", "applied": 1}
    assert sql("SELECT id, sort_order FROM book_shelves") == [(pair, None)]


def test_tag_names_are_unique_per_reader_ignoring_case(
    client: TestClient, alice: Reader, bob: Reader, sql
) -> None:
    sci, fun = new_id(), new_id()
    send(client, alice, put("tags", sci, {"name": "Sci-Fi"}), put("tags", fun, {"name": "Fun"}))
    assert send(client, bob, put("tags", new_id(), {"name": "sci-fi"}))["status"] == "applied"

    clash = new_id()
    result = send(client, alice, put("tags", clash, {"name": "SCI-FI"}))
    assert [(r["code"], r["id"]) for r in result["rejections"]] == [("duplicate", clash)]
    renamed = send(client, alice, patch("tags", fun, {"name": "sci-fi"}))
    assert [(r["code"], r["id"]) for r in renamed["rejections"]] == [("duplicate", fun)]
    a, b = new_id(), new_id()
    twins = send(client, alice, put("tags", a, {"name": "New"}), put("tags", b, {"name": "new"}))
    assert sorted(r["id"] for r in twins["rejections"]) == sorted([a, b])

    # Within one transaction: swapping names, or deleting one and reusing its name, is fine.
    swap = send(
        client,
        alice,
        patch("tags", sci, {"name": "fun"}),
        patch("tags", fun, {"name": "SCI-FI"}),
    )
    assert swap["status"] == "applied", swap
    reuse = send(client, alice, delete("tags", sci), put("tags", new_id(), {"name": "Fun"}))
    assert reuse["status"] == "applied", reuse
    renamed_then_reused = send(
        client,
        alice,
        patch("tags", fun, {"name": "Joy"}),
        put("tags", new_id(), {"name": "sci-fi"}),
    )
    assert renamed_then_reused["status"] == "applied", renamed_then_reused
    assert sorted(
        name for (name,) in sql("SELECT name FROM tags WHERE owner_user_id = %s", (alice.user_id,))
    ) == ["Fun", "Joy", "sci-fi"]


def test_a_concurrent_duplicate_caught_by_the_index_is_still_a_duplicate(
    client: TestClient, alice: Reader, sql, monkeypatch
) -> None:
    """Two uploads racing for one name: the unique index decides, with the same answer."""
    from papyrus.server.sync import service

    send(client, alice, put("tags", new_id(), {"name": "Race"}))

    async def sees_no_duplicates(db, owner, plans):  # as if the other upload committed later
        return []

    monkeypatch.setattr(service, "_duplicates", sees_no_duplicates)
    late = new_id()
    result = send(client, alice, put("tags", late, {"name": "race"}))
    assert [(r["code"], r["id"]) for r in result["rejections"]] == [("duplicate", late)]
    assert count(sql, "tags") == 1


def test_shelves_never_form_a_cycle(client: TestClient, alice: Reader, sql) -> None:
    a, b, c = new_id(), new_id(), new_id()
    send(
        client,
        alice,
        put("shelves", a, {"name": "A"}),
        put("shelves", b, {"name": "B", "parent_shelf_id": a}),
        put("shelves", c, {"name": "C", "parent_shelf_id": b}),
    )
    itself = send(client, alice, patch("shelves", a, {"parent_shelf_id": a}))
    assert [(r["code"], r["id"]) for r in itself["rejections"]] == [("cycle", a)]
    through_stored = send(client, alice, patch("shelves", a, {"parent_shelf_id": c}))
    assert [(r["code"], r["id"]) for r in through_stored["rejections"]] == [("cycle", a)]
    x, y = new_id(), new_id()
    in_one_transaction = send(
        client,
        alice,
        put("shelves", x, {"name": "X", "parent_shelf_id": y}),
        put("shelves", y, {"name": "Y", "parent_shelf_id": x}),
    )
    assert sorted(r["id"] for r in in_one_transaction["rejections"]) == sorted([x, y])
    assert row(sql, "shelves", a)["parent_shelf_id"] is None

    # Moving a subtree elsewhere, even by several operations, is fine.
    moved = send(
        client,
        alice,
        patch("shelves", b, {"parent_shelf_id": None}),
        patch("shelves", a, {"parent_shelf_id": c}),
    )
    assert moved["status"] == "applied", moved
    assert row(sql, "shelves", a)["parent_shelf_id"] == c


def test_a_closed_reading_session_is_history(client: TestClient, alice: Reader, sql) -> None:
    book, session = new_id(), new_id()
    opened = {"book_id": book, "started_at": "2026-01-01T10:00:00Z", "pages_read": 3}
    send(
        client,
        alice,
        put("books", book, {"title": "Dune"}),
        put("reading_sessions", session, opened),
    )
    assert (
        send(client, alice, patch("reading_sessions", session, {"pages_read": 9}))["status"]
        == "applied"
    )
    closing = patch("reading_sessions", session, {"ended_at": "2026-01-01T11:00:00+00:00"})
    assert send(client, alice, closing) == {"status": "applied", "applied": 1}

    for change in (
        patch("reading_sessions", session, {"pages_read": 100}),
        patch("reading_sessions", session, {"ended_at": None}),
        put("reading_sessions", session, {**opened, "ended_at": "2026-01-01T12:00:00Z"}),
        put("reading_sessions", session, {**opened, "pages_read": 9}),  # reopened by omission
        delete("reading_sessions", session),
    ):
        result = send(client, alice, change)
        assert [(r["code"], r["id"]) for r in result["rejections"]] == [("closed", session)]
    stored = row(sql, "reading_sessions", session)
    assert stored["pages_read"] == 9 and stored["ended_at"].startswith("2026-01-01T11:00:00")

    # A replay of the closing write (its answer was lost) changes nothing and is fine.
    assert send(client, alice, closing) == {"status": "applied", "applied": 1}
    replay = put(
        "reading_sessions",
        session,
        {**opened, "pages_read": 9, "ended_at": "2026-01-01T12:00:00+01:00"},
    )
    assert send(client, alice, replay) == {"status": "applied", "applied": 1}

    # The server still deletes it with its book, also when the client deletes both.
    other_book, other_session = new_id(), new_id()
    send(
        client,
        alice,
        put("books", other_book, {"title": "Emma"}),
        put(
            "reading_sessions",
            other_session,
            {**opened, "book_id": other_book, "ended_at": "2026-01-01T11:00:00Z"},
        ),
    )
    both = send(
        client, alice, delete("reading_sessions", other_session), delete("books", other_book)
    )
    assert both == {"status": "applied", "applied": 2}
    assert send(client, alice, delete("books", book)) == {"status": "applied", "applied": 1}
    assert count(sql, "reading_sessions") == 0


def test_deciding_again_keeps_the_callers_own_writes_in_the_transaction(
    client: TestClient, alice: Reader, database_url: str, sql
) -> None:
    """A PUT over a protected stored row (here a replayed closed session) is decided again with
    the row loaded; a caller's earlier writes in the same transaction survive that."""
    import asyncio
    import uuid

    from papyrus.server.db import create_engine, session_factory
    from papyrus.server.sync import service

    book, session = new_id(), new_id()
    closed = {
        "book_id": book,
        "started_at": "2026-01-01T10:00:00Z",
        "ended_at": "2026-01-01T11:00:00Z",
    }
    send(
        client, alice, put("books", book, {"title": "T"}), put("reading_sessions", session, closed)
    )
    marker = new_id()

    async def run() -> service.UploadResult:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as db:
                await db.execute(
                    text("INSERT INTO books (id, owner_user_id, title) VALUES (:id, :owner, 'M')"),
                    {"id": marker, "owner": alice.user_id},
                )
                replay = transaction(put("reading_sessions", session, closed))["batch"]
                return await service.apply_upload(db, uuid.UUID(alice.user_id), replay)
        finally:
            await engine.dispose()

    result = asyncio.run(run())
    assert (result.applied, result.rejections) == (1, [])
    assert row(sql, "books", marker) is not None


def test_immutable_columns_keep_their_first_value(client: TestClient, alice: Reader, sql) -> None:
    book, other, highlight = new_id(), new_id(), new_id()
    data = {"book_id": book, "selected_text": "x", "location": LOCATION}
    send(
        client,
        alice,
        put("books", book, {"title": "A"}),
        put("books", other, {"title": "B"}),
        put("annotations", highlight, data),
    )
    moved = send(client, alice, put("annotations", highlight, {**data, "book_id": other}))
    assert [(r["code"], r["id"]) for r in moved["rejections"]] == [("immutable_field", highlight)]
    patched = send(client, alice, patch("annotations", highlight, {"book_id": other}))
    assert [r["code"] for r in patched["rejections"]] == ["immutable_field"]
    assert row(sql, "annotations", highlight)["book_id"] == book
    same = send(client, alice, put("annotations", highlight, {**data, "note": "ok"}))
    assert same == {"status": "applied", "applied": 1}


def test_a_patch_out_of_order_with_the_stored_row_is_a_clear_rejection(
    client: TestClient, alice: Reader, sql
) -> None:
    book = new_id()
    send(client, alice, put("books", book, {"title": "T", "started_at": "2026-03-01T10:00:00Z"}))
    result = send(client, alice, patch("books", book, {"finished_at": "2026-02-01T10:00:00Z"}))
    assert result["rejections"] == [
        {
            "op_id": 1,
            "id": book,
            "code": "invalid_value",
            "message": "finished_at: must not be before started_at.",
        }
    ]
    assert row(sql, "books", book)["finished_at"] is None


def test_tombstones_are_pruned_after_90_days(client: TestClient, alice: Reader, sql) -> None:
    old, recent = new_id(), new_id()
    send(client, alice, put("books", old, {"title": "Old"}), put("books", recent, {"title": "New"}))
    send(client, alice, delete("books", old))
    sql("UPDATE sync_tombstones SET deleted_at = now() - interval '91 days'")
    send(client, alice, delete("books", recent))
    assert sql("SELECT row_id FROM sync_tombstones") == [(recent,)]
    # Past that horizon a very late write is no longer recognised as late (documented).
    assert send(client, alice, patch("books", old, {"title": "x"})) == {
        "status": "applied",
        "applied": 1,
    }


def test_deleting_an_account_leaves_no_tombstones(client: TestClient, alice: Reader, sql) -> None:
    book = new_id()
    send(client, alice, *library(book, new_id(), new_id(), new_id()))
    send(client, alice, delete("annotations", new_id()))
    sql("DELETE FROM users WHERE id = %s", (alice.user_id,))
    for table in ("books", "sync_tombstones", "sync_rejections", *CHILD_TABLES):
        assert count(sql, table) == 0, table


@pytest.fixture
def statements() -> Any:
    executed: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        executed.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    yield executed
    event.remove(Engine, "before_cursor_execute", record)


def _mixed(size: int) -> list[dict[str, Any]]:
    shelf = new_id()
    entries = [put("shelves", shelf, {"name": "S"})]
    for _ in range(size):
        book = new_id()
        entries += [
            put("books", book, {"title": "T", "co_authors": ["A"]}),
            put("book_shelves", f"{book}:{shelf}", {"book_id": book, "shelf_id": shelf}),
            put(
                "annotations",
                new_id(),
                {"book_id": book, "selected_text": "x", "location": LOCATION},
            ),
            put(
                "reading_sessions",
                new_id(),
                {"book_id": book, "started_at": "2026-01-01T10:00:00Z"},
            ),
        ]
    return entries


def test_the_number_of_statements_does_not_grow_with_the_transaction(
    client: TestClient, alice: Reader, sql, statements: list[str]
) -> None:
    counts = []
    for size in (1, 200):
        statements.clear()
        assert send(client, alice, *_mixed(size))["status"] == "applied"
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 2 * 5 + 4, counts  # load + upsert per table, plus the envelope's own
