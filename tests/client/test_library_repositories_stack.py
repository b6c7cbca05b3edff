"""The library's repositories against the whole stack (the real API and the development sync
service): writes across tables reach PostgreSQL, late writes to deleted rows are reported as
dropped, and goal progress on the device equals the server's."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import httpx

from papyrus.client import AuthProvider
from tests.client.stack import Stack

PASSWORD = "correct horse battery"
GENEROUS = 120.0
PERIODS = (("month", "2026-01-31"), ("week", "2026-02-02"), ("year", "2026-01-01"))


def signed_in(stack: Stack, name: str, *, register: bool = False) -> AuthProvider:
    device = stack.client(name, auto_connect=False)
    if register:
        device.register("ada@example.com", PASSWORD, "Ada")
    else:
        device.sign_in("ada@example.com", PASSWORD)
    return device


def test_a_transaction_across_tables_reaches_postgresql(stack: Stack) -> None:
    device = signed_in(stack, "laptop", register=True)
    library = device.library
    with device.database.write_transaction():
        book = library.add("Dune", page_count=400, series_id=library.series.add(name="Dune").id)
        shelf = library.shelves.add(name="Favourites", color="#aa0000")
        library.add_to_shelf(book, shelf)
        library.tag(book, library.tags.add(name="Classic"))
        library.highlights.add(book_id=book.id, selected_text="Fear", location={"page": 3})
    library.record_progress(book, page=100, at=datetime(2026, 3, 1, 10, tzinfo=UTC))
    result = device.sync_now(GENEROUS)
    assert result.synced and result.rejections == ()
    assert stack.sql("SELECT title, current_page, reading_status FROM books") == [
        ("Dune", 100, "reading")
    ]
    assert stack.sql("SELECT id FROM book_shelves") == [(f"{book.id}:{shelf.id}",)]
    assert stack.sql("SELECT count(*) FROM book_tags") == [(1,)]
    assert stack.sql("SELECT selected_text FROM annotations") == [("Fear",)]
    # No page was known before: nothing counts as read in this first session yet.
    assert stack.sql("SELECT pages_read, ended_at FROM reading_sessions") == [(0, None)]


def test_a_late_edit_to_a_deleted_book_is_reported_as_dropped(stack: Stack) -> None:
    phone = signed_in(stack, "phone", register=True)
    laptop = signed_in(stack, "laptop")
    book = phone.library.add("Dune")
    mark = phone.library.highlights.add(book_id=book.id, selected_text="x", location={"page": 1})
    assert phone.sync_now(GENEROUS).synced
    assert laptop.sync_now(GENEROUS).synced
    assert [h.id for h in laptop.library.highlights_of(book)] == [mark.id]

    # Offline, the laptop edits a highlight of the book and adds another one, in a
    # transaction that also adds an unrelated book...
    with laptop.database.write_transaction():
        laptop.library.highlights.update(mark.id, note="a late thought")
        late = laptop.library.highlights.add(
            book_id=book.id, selected_text="y", location={"page": 2}
        )
        laptop.library.add("Kept")
    # ...while the phone deletes the book (the server deletes its highlights with it).
    phone.library.delete(book.id)
    assert phone.sync_now(GENEROUS).synced
    assert stack.sql("SELECT count(*) FROM annotations") == [(0,)]

    result = laptop.sync_now(GENEROUS)
    assert result.synced and not result.timed_out
    dropped = {(r.row_id, r.code) for r in result.rejections}
    assert dropped == {(mark.id, "row_deleted"), (late.id, "parent_deleted")}
    assert all(r.dropped and r.row_type == "annotations" for r in result.rejections)
    assert {(r.row_id, r.code) for r in laptop.data_store.rejections()} == dropped
    # The rest of the transaction applied, and every device converges on "deleted".
    assert stack.sql("SELECT title FROM books") == [("Kept",)]
    assert laptop.library.get(book.id) is None and laptop.library.highlights.count() == 0
    assert [b.title for b in laptop.library.list()] == ["Kept"]


def test_goal_progress_on_the_device_equals_the_servers(stack: Stack) -> None:

    device = signed_in(stack, "laptop", register=True)
    library = device.library
    start = datetime(2026, 1, 31, 22, tzinfo=UTC)
    with device.database.write_transaction():
        books = [library.add(f"Book {n}") for n in range(6)]
        for n, book in enumerate(books):
            finished = start + timedelta(days=9 * n, hours=n)
            library.update(book.id, finished_at=finished.isoformat())
            for k in range(3):
                began = finished - timedelta(days=k, minutes=17 * k)
                if k == 2:  # another offset, the same instant
                    shown = began.astimezone(timezone_plus_two()).isoformat()
                else:
                    shown = began.isoformat()
                ended = began + timedelta(minutes=13 * k + 7, seconds=29 * n)
                library.sessions.add(
                    book_id=book.id,
                    started_at=shown,
                    ended_at=ended.isoformat() if (n + k) % 3 else None,
                    pages_read=11 * k + n,
                )
        for kind in ("books", "pages", "minutes"):
            for period, first in (
                ("month", "2026-01-31"),
                ("week", "2026-02-02"),
                ("year", "2026-01-01"),
            ):
                library.goals.add(kind=kind, target=10, period=period, period_start=first)
        library.goals.add(
            kind="books", target=1, period="month", period_start="2026-02-01", active=False
        )
    on_device = library.goals.progress()
    assert device.sync_now(GENEROUS).synced
    assert device.user is not None

    def on_server() -> list[tuple[object, ...]]:
        response = httpx.get(
            f"{stack.api_url}/v1/library/goals/progress",
            headers={"Authorization": f"Bearer {device.auth.access_token()}"},
        )
        assert response.status_code == 200, response.text
        return [
            (
                g["goal_id"],
                g["kind"],
                g["target"],
                date.fromisoformat(g["period_start"]),
                date.fromisoformat(g["period_end"]),
                g["done"],
            )
            for g in response.json()["goals"]
        ]

    def shape(progress: list) -> list[tuple[object, ...]]:
        return [
            (p.goal_id, p.kind, p.target, p.period_start, p.period_end, p.done) for p in progress
        ]

    server = on_server()
    assert len(server) == 9 and any(row[-1] for row in server)
    assert shape(on_device) == server
    assert shape(library.goals.progress()) == server  # also from the rows as synced back


def timezone_plus_two():

    return timezone(timedelta(hours=2))
