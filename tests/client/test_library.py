"""The Library beyond one table: reading progress (one atomic call), watched joins, goals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import apsw
import pytest

from papyrus import contract
from papyrus.client import (
    ACCOUNT_SCHEMA,
    GUEST_SCHEMA,
    Library,
    PowerSyncDatabase,
    ValidationError,
)
from papyrus.client.goals import period_end

OpenDb = Callable[..., PowerSyncDatabase]
USER = "11111111-1111-4111-8111-111111111111"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["account", "guest"])
def library(request: pytest.FixtureRequest, open_db: OpenDb) -> Library:
    if request.param == "account":
        return Library(open_db("account.db", ACCOUNT_SCHEMA), USER, device_label="laptop")
    return Library(open_db("guest.db", GUEST_SCHEMA), device_label="laptop")


def moment(value: str | None) -> datetime:
    assert value is not None
    return datetime.fromisoformat(value)


def everything(library: Library) -> tuple[object, ...]:
    tables = tuple(
        sorted(map(str, library.database.get_all(f'SELECT * FROM "{name}"')))
        for name in [*(t.name for t in contract.TABLES), "reading_activity"]
    )
    return tables, library.database.upload_queue_size()


# -- reading progress -----------------------------------------------------------------------------


def test_first_progress_starts_the_book_and_a_session(library: Library) -> None:
    book = library.add("Dune", page_count=400, current_page=20)
    done = library.record_progress(book, page=100, at=T0)
    assert done.new_session and done.closed == ()
    after = done.book
    assert (after.current_page, after.current_position) == (100, 0.25)  # the fraction, derived
    assert after.reading_status == "reading"
    assert moment(after.last_read_at) == moment(after.started_at) == T0
    session = done.session
    assert session.book_id == book.id and session.ended_at is None
    assert moment(session.started_at) == T0
    assert (session.pages_read, session.end_position, session.device_label) == (80, 0.25, "laptop")
    assert library.open_sessions() == [session]


def test_progress_within_the_gap_extends_the_session(library: Library) -> None:
    book = library.add("Dune", page_count=400)
    first = library.record_progress(book, page=10, at=T0)
    again = library.record_progress(book, page=30, at=T0 + timedelta(minutes=20))
    assert not again.new_session and again.session.id == first.session.id
    assert again.session.pages_read == 20 and again.session.end_position == 0.075
    assert again.book.started_at == first.book.started_at  # started once
    assert moment(again.book.last_read_at) == T0 + timedelta(minutes=20)
    assert library.sessions.count() == 1


def test_after_a_pause_the_old_session_ends_at_its_last_progress(library: Library) -> None:
    book = library.add("Dune")
    first = library.record_progress(book, position=0.1, at=T0)
    library.record_progress(book, position=0.2, at=T0 + timedelta(minutes=25))
    later = library.record_progress(book, position=0.3, at=T0 + timedelta(hours=3))
    assert later.new_session and [s.id for s in later.closed] == [first.session.id]
    ended = library.sessions.require(first.session.id)
    assert moment(ended.ended_at) == T0 + timedelta(minutes=25)
    assert later.session.start_position == 0.2 and later.session.end_position == 0.3
    assert library.open_sessions() == [later.session]


def test_reading_another_book_ends_this_devices_open_session(library: Library) -> None:
    dune, emma = library.add("Dune"), library.add("Emma")
    first = library.record_progress(dune, page=5, at=T0)
    other = library.record_progress(emma, page=7, at=T0 + timedelta(minutes=5))
    assert [s.id for s in other.closed] == [first.session.id]
    assert library.open_sessions() == [other.session]


def test_finished_marks_the_book_and_ends_the_session(library: Library) -> None:
    book = library.add("Dune")
    library.record_progress(book, page=10, at=T0)
    done = library.record_progress(book, page=300, at=T0 + timedelta(minutes=10), finished=True)
    assert done.book.reading_status == "finished"
    assert moment(done.book.finished_at) == T0 + timedelta(minutes=10)
    assert done.session.ended_at is not None and done.closed == (done.session,)
    assert library.open_sessions() == []
    assert library.end_reading() == ()


def test_end_reading_closes_the_open_session(library: Library) -> None:
    book = library.add("Dune")
    done = library.record_progress(book, cfi="epubcfi(/6/4)", at=T0)
    assert done.book.current_cfi == "epubcfi(/6/4)"
    [ended] = library.end_reading()
    assert ended.id == done.session.id and ended.ended_at is not None
    assert library.open_sessions() == []


def test_progress_is_one_transaction_a_failure_midway_leaves_nothing(library: Library) -> None:
    book = library.add("Dune", page_count=400)
    library.record_progress(book, page=10, at=T0)
    before = everything(library)
    # Fail the session's write, after the book's has run, from inside SQLite.
    internal = "ps_data__reading_sessions"
    if library.owner_user_id is None:
        internal = "ps_data_local__reading_sessions"
    library.database._core._conn.execute(
        f"CREATE TEMP TRIGGER fail_sessions BEFORE UPDATE ON main.{internal}"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(apsw.ConstraintError, match="disk on fire"):
        library.record_progress(book, page=50, at=T0 + timedelta(minutes=5))
    assert everything(library) == before
    library.database._core._conn.execute("DROP TRIGGER temp.fail_sessions")
    assert library.record_progress(book, page=50, at=T0 + timedelta(minutes=5)).book.current_page


def test_an_invalid_progress_is_refused_whole(library: Library) -> None:
    book = library.add("Dune")
    before = everything(library)
    with pytest.raises(ValidationError, match="current_position: must be a number from 0 to 1"):
        library.record_progress(book, position=1.5, at=T0)
    with pytest.raises(ValidationError, match="current_page"):
        library.record_progress(book, page=-1, at=T0)
    long = Library(library.database, library.owner_user_id, device_label="x" * 101)
    with pytest.raises(ValidationError, match="device_label"):  # the session part is invalid
        long.record_progress(book, page=3, at=T0)
    assert everything(library) == before


# -- joins in watch() ----------------------------------------------------------------------------


def test_watch_a_shelfs_books_follows_both_tables(library: Library) -> None:
    dune, emma = library.add("Dune"), library.add("Emma")
    shelf = library.shelves.add(name="Favourites")
    with library.watch_books_on_shelf(shelf) as watch:
        assert watch.next(timeout=5) == []
        library.add_to_shelf(dune, shelf)
        assert [b.title for b in watch.next(timeout=5)] == ["Dune"]
        library.update(dune.id, title="Dune (1965)")  # only `books` changed
        assert [b.title for b in watch.next(timeout=5)] == ["Dune (1965)"]
        library.add_to_shelf(emma, shelf)
        assert [b.title for b in watch.next(timeout=5)] == ["Dune (1965)", "Emma"]
        library.remove_from_shelf(dune, shelf)
        assert [b.title for b in watch.next(timeout=5)] == ["Emma"]
        library.tags.add(name="unrelated")
        with pytest.raises(TimeoutError):
            watch.next(timeout=0.3)


def test_watch_a_books_highlights_and_tags(library: Library) -> None:
    book, other = library.add("Dune"), library.add("Emma")
    with library.watch_highlights_of(book) as highlights, library.watch_tags_of(book) as tags:
        assert highlights.next(timeout=5) == [] and tags.next(timeout=5) == []
        library.highlights.add(book_id=book.id, selected_text="Fear", location={"page": 3})
        assert [h.selected_text for h in highlights.next(timeout=5)] == ["Fear"]
        classic = library.tags.add(name="Classic")
        library.tag(book, classic)
        assert [t.name for t in tags.next(timeout=5)][-1:] == ["Classic"]
        library.tags.update(classic.id, name="Classics")  # the tag's own table
        assert [t.name for t in tags.next(timeout=5)] == ["Classics"]
        library.highlights.add(book_id=other.id, selected_text="Not this one", location={"page": 1})
        assert [h.selected_text for h in highlights.next(timeout=5)] == ["Fear"]


def test_watch_any_join_through_a_repository(library: Library) -> None:
    sql = (
        "SELECT b.* FROM books b JOIN bookmarks m ON m.book_id = b.id"
        " WHERE m.label = ? ORDER BY b.title"
    )
    with library.watch_select(sql, ("later",)) as watch:
        assert watch.next(timeout=5) == []
        book = library.add("Dune")
        assert watch.next(timeout=5) == []
        library.bookmarks.add(book_id=book.id, location={"page": 1}, label="later")
        assert [b.title for b in watch.next(timeout=5)] == ["Dune"]


# -- goals, computed on the device ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "period", "end"),
    [
        (date(2026, 1, 31), "month", date(2026, 2, 28)),
        (date(2028, 1, 31), "month", date(2028, 2, 29)),
        (date(2026, 12, 15), "month", date(2027, 1, 15)),
        (date(2028, 2, 29), "year", date(2029, 2, 28)),
        (date(2026, 3, 9), "week", date(2026, 3, 16)),
    ],
)
def test_periods_end_as_postgresql_adds_intervals(start: date, period: str, end: date) -> None:
    assert period_end(start, period) == end


def test_goal_progress_counts_what_falls_in_the_period(library: Library) -> None:
    inside = library.add("In", finished_at="2026-03-31T23:59:00Z")
    library.add("Before", finished_at="2026-02-28T23:59:59Z")
    library.add("After", finished_at="2026-04-01T00:00:00Z")
    for start, end, pages in [
        ("2026-03-01T00:00:00Z", "2026-03-01T00:45:30Z", 40),
        ("2026-03-10T10:00:00+02:00", "2026-03-10T11:00:00+02:00", 30),
        ("2026-03-20T10:00:00Z", None, 5),  # open: its pages count, its minutes not yet
        ("2026-04-01T00:00:00Z", "2026-04-01T05:00:00Z", 500),
    ]:
        library.sessions.add(book_id=inside.id, started_at=start, ended_at=end, pages_read=pages)
    goals = library.goals
    books = goals.add(kind="books", target=2, period="month", period_start="2026-03-01")
    pages = goals.add(kind="pages", target=50, period="month", period_start="2026-03-01")
    minutes = goals.add(kind="minutes", target=60, period="month", period_start="2026-03-01")
    idle = goals.add(kind="books", target=1, period="year", period_start="2026-01-01", active=False)
    found = {p.goal_id: p for p in goals.progress()}
    assert idle.id not in found
    assert found[books.id].done == 1 and not found[books.id].reached
    assert found[pages.id].done == 75 and found[pages.id].reached
    assert found[minutes.id].done == 105  # 45.5 + 60 minutes, rounded down once
    assert found[minutes.id].period_end == date(2026, 4, 1)
    assert goals.progress(idle)[0].done == 3  # asked for by id: inactive goals too
    with goals.watch_progress() as watch:
        watch.next(timeout=5)
        library.add("Also in March", finished_at="2026-03-02T00:00:00Z")
        assert {p.goal_id: p.done for p in watch.next(timeout=5)}[books.id] == 2
