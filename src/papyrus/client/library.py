"""The whole reading library of one local database: a repository per table, memberships,
joins, reading progress and goals.

`Library` is the `BookRepository` of the database (so `library.add("Dune")` keeps adding a
book) with a repository per table as attributes: `series`, `shelves`, `tags`, `shelvings`
(books on shelves), `book_tags`, `highlights`, `notes`, `bookmarks`, `sessions`, `goals`. Every
one of them is the generic `Repository` over the table's declaration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from papyrus.client.books import BookRepository
from papyrus.client.goals import GoalProgress, goal_progress
from papyrus.client.records import (
    Book,
    Bookmark,
    BookShelf,
    BookTag,
    Highlight,
    Note,
    R,
    ReadingGoal,
    ReadingSession,
    Record,
    Series,
    Shelf,
    Tag,
)
from papyrus.client.repository import Repository

if TYPE_CHECKING:
    from papyrus.client.database import PowerSyncDatabase, Watch

SESSION_GAP = timedelta(minutes=30)
"""Progress recorded within this time of the last on this device extends the open session;
after a longer pause it starts a new one (the old one ends at its last progress)."""

Ref = str | Record
"""A row given by its id or as its record."""


def _id(ref: Ref) -> str:
    return ref if isinstance(ref, str) else ref.id


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _moment(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class MembershipRepository(Repository[R]):
    """A table whose rows link two others (`id_from`): the id is derived from the pair, so
    linking is idempotent and two devices that link the same pair offline make one row."""

    def link(self, first: Ref, second: Ref, **values: Any) -> R:
        """The link between the two rows, made unless it exists."""
        a, b = self._pair()
        existing = self.get(f"{_id(first)}:{_id(second)}")
        if existing is not None:
            return existing
        return self.add(**{a: _id(first), b: _id(second)}, **values)

    def unlink(self, first: Ref, second: Ref) -> bool:
        """Removes the link; False if there was none."""
        row_id = f"{_id(first)}:{_id(second)}"
        if self.get(row_id) is None:
            return False
        self.delete(row_id)
        return True

    def _pair(self) -> tuple[str, str]:
        pair = self.table.id_from
        if pair is None:
            raise TypeError(f"{self.table.name} is not a membership table")
        return pair


class GoalRepository(Repository[ReadingGoal]):
    """Reading goals, with their progress computed on the device (`papyrus.client.goals`)."""

    def progress(self, goal: Ref | None = None) -> list[GoalProgress]:
        """Progress of one goal (active or not), or of every active goal."""
        return goal_progress(self.database, _id(goal) if goal is not None else None)

    def watch_progress(self) -> Watch[list[GoalProgress]]:
        """Active goals' progress now and after every change to goals, books or sessions."""
        return self.database.watch(
            lambda: self.progress(), ["reading_goals", "books", "reading_sessions"]
        )


@dataclass(frozen=True)
class Progress:
    """What `Library.record_progress` did."""

    book: Book
    session: ReadingSession
    new_session: bool
    """A session was opened (rather than the open one extended)."""
    closed: tuple[ReadingSession, ...] = ()
    """Sessions of this device that the call ended (stale, of another book, or this one)."""


class Library(BookRepository):
    """Every table of one local database (the account's or the guest library)."""

    def __init__(
        self,
        database: PowerSyncDatabase,
        owner_user_id: str | None = None,
        *,
        device_label: str | None = None,
        session_gap: timedelta = SESSION_GAP,
    ) -> None:
        super().__init__(database, owner_user_id)
        self.device_label = device_label
        self.session_gap = session_gap
        owner = owner_user_id
        self.books: BookRepository = self
        self.series = Repository(database, Series, owner)
        self.shelves = Repository(database, Shelf, owner)
        self.tags = Repository(database, Tag, owner)
        self.shelvings = MembershipRepository(database, BookShelf, owner)
        self.book_tags = MembershipRepository(database, BookTag, owner)
        self.highlights = Repository(database, Highlight, owner)
        self.notes = Repository(database, Note, owner)
        self.bookmarks = Repository(database, Bookmark, owner)
        self.sessions = Repository(database, ReadingSession, owner)
        self.goals = GoalRepository(database, ReadingGoal, owner)

    def repositories(self) -> Sequence[Repository[Any]]:
        """One repository per declared table, in the declarations' order."""
        return (
            self.series,
            self.books,
            self.shelves,
            self.tags,
            self.shelvings,
            self.book_tags,
            self.highlights,
            self.notes,
            self.bookmarks,
            self.sessions,
            self.goals,
        )

    def repository(self, table: str) -> Repository[Any]:
        """The repository of a declared table, by its name."""
        for repository in self.repositories():
            if repository.table.name == table:
                return repository
        raise KeyError(f"no repository for {table!r}")

    # -- shelves and tags ---------------------------------------------------------------------

    def add_to_shelf(self, book: Ref, shelf: Ref, *, sort_order: int | None = None) -> BookShelf:
        """Puts a book on a shelf (the id is `<book_id>:<shelf_id>`; again is a no-op)."""
        values = {} if sort_order is None else {"sort_order": sort_order}
        return self.shelvings.link(book, shelf, **values)

    def remove_from_shelf(self, book: Ref, shelf: Ref) -> bool:
        return self.shelvings.unlink(book, shelf)

    def tag(self, book: Ref, tag: Ref) -> BookTag:
        """Tags a book (the id is `<book_id>:<tag_id>`; again is a no-op)."""
        return self.book_tags.link(book, tag)

    def untag(self, book: Ref, tag: Ref) -> bool:
        return self.book_tags.unlink(book, tag)

    def books_on_shelf(self, shelf: Ref) -> list[Book]:
        return self.select(*self.linked_sql(BookShelf.table, "shelf_id", _id(shelf)))

    def watch_books_on_shelf(self, shelf: Ref) -> Watch[list[Book]]:
        return self.watch_select(*self.linked_sql(BookShelf.table, "shelf_id", _id(shelf)))

    def shelves_of(self, book: Ref) -> list[Shelf]:
        return self.shelves.select(*self.shelves.linked_sql(BookShelf.table, "book_id", _id(book)))

    def tags_of(self, book: Ref) -> list[Tag]:
        return self.tags.select(*self.tags.linked_sql(BookTag.table, "book_id", _id(book)))

    def watch_tags_of(self, book: Ref) -> Watch[list[Tag]]:
        return self.tags.watch_select(*self.tags.linked_sql(BookTag.table, "book_id", _id(book)))

    def books_tagged(self, tag: Ref) -> list[Book]:
        return self.select(*self.linked_sql(BookTag.table, "tag_id", _id(tag)))

    def highlights_of(self, book: Ref) -> list[Highlight]:
        return self.highlights.list(book_id=_id(book))

    def watch_highlights_of(self, book: Ref) -> Watch[list[Highlight]]:
        return self.highlights.watch(book_id=_id(book))

    # -- reading progress ---------------------------------------------------------------------

    def record_progress(
        self,
        book: Ref,
        *,
        position: float | None = None,
        page: int | None = None,
        cfi: str | None = None,
        at: datetime | None = None,
        finished: bool = False,
        stop: bool = False,
    ) -> Progress:
        """Records where the reader is in a book, in one local transaction:

        * the book's `current_position` (a fraction), `current_page` and `current_cfi` (those
          given; with the book's `page_count` known, a page gives the fraction and a fraction
          the page), `last_read_at`; `started_at` when first read, and `reading_status`
          `reading` unless it is set to something else than `not_started`;
        * this device's reading session of the book: extended (its end position, pages read)
          when its last progress is at most `session_gap` ago, otherwise a new one is opened,
          and any other open session of this device ends at its last progress;
        * `finished=True` also marks the book finished (`finished_at`) and ends the session;
          `stop=True` ends the session.

        Refused whole (`ValidationError`, nothing written) when a value breaks the contract."""
        if position is None and page is None and cfi is None and not finished:
            raise ValueError("record_progress needs a position, a page or a CFI")
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        stamp = _stamp(moment)
        with self.database.write_transaction():
            current_book = self.require(_id(book))
            if current_book.page_count:
                if position is None and page is not None:
                    position = min(1.0, page / current_book.page_count)
                elif page is None and position is not None:
                    page = round(position * current_book.page_count)
            batch = self.batch()
            changes: dict[str, Any] = {"last_read_at": stamp}
            for column, value in (
                ("current_position", position),
                ("current_page", page),
                ("current_cfi", cfi),
            ):
                if value is not None:
                    changes[column] = value
            if current_book.started_at is None:
                changes["started_at"] = stamp
            if finished:
                changes["reading_status"] = "finished"
                if current_book.finished_at is None:
                    changes["finished_at"] = stamp
            elif current_book.reading_status in (None, "not_started"):
                changes["reading_status"] = "reading"
            batch.patch(self.table, current_book.id, changes)

            sessions = ReadingSession.table
            self.database.execute(
                "DELETE FROM reading_activity WHERE id NOT IN"
                " (SELECT id FROM reading_sessions WHERE ended_at IS NULL)"
            )
            open_rows = self.database.get_all(
                "SELECT a.id, a.book_id, a.last_at, a.page, s.pages_read"
                " FROM reading_activity AS a JOIN reading_sessions AS s ON s.id = a.id"
                " ORDER BY a.last_at DESC"
            )
            extended: dict[str, Any] | None = None
            closing: list[str] = []
            for row in open_rows:
                last = _moment(row["last_at"])
                recent = last is not None and moment - last <= self.session_gap
                if extended is None and row["book_id"] == current_book.id and recent:
                    extended = row
                else:
                    batch.patch(sessions, row["id"], {"ended_at": row["last_at"]})
                    closing.append(str(row["id"]))
            last_at = stamp
            if extended is not None:
                session_id = str(extended["id"])
                previous = _moment(extended["last_at"])
                if previous is not None and previous > moment:
                    last_at = str(extended["last_at"])
                pages = extended["pages_read"]
                if page is not None and extended["page"] is not None:
                    pages = (pages or 0) + max(0, page - int(extended["page"]))
                session_changes: dict[str, Any] = {}
                if position is not None:
                    session_changes["end_position"] = position
                if pages != extended["pages_read"]:
                    session_changes["pages_read"] = pages
                batch.patch(sessions, session_id, session_changes)
            else:
                start = current_book.current_position
                before_page = current_book.current_page
                read = None
                if page is not None:
                    read = max(0, page - before_page) if before_page is not None else 0
                session_id = batch.put(
                    sessions,
                    {
                        "book_id": current_book.id,
                        "started_at": stamp,
                        "start_position": start if start is not None else position,
                        "end_position": position,
                        "pages_read": read,
                        "device_label": self.device_label,
                    },
                )
            ended = finished or stop
            if ended:
                batch.patch(sessions, session_id, {"ended_at": last_at})
            batch.apply()
            self.database.execute(
                "DELETE FROM reading_activity WHERE id IN (?" + ", ?" * len(closing) + ")",
                (session_id, *closing),
            )
            if not ended:
                self.database.execute(
                    "INSERT INTO reading_activity (id, book_id, last_at, page, position)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (session_id, current_book.id, last_at, page, position),
                )
            closed = [self.sessions.require(i) for i in closing]
            if ended:
                closed.append(self.sessions.require(session_id))
            return Progress(
                self.require(current_book.id),
                self.sessions.require(session_id),
                extended is None,
                tuple(closed),
            )

    def open_sessions(self) -> list[ReadingSession]:
        """This device's reading sessions that are still open."""
        return self.sessions.select(
            "SELECT s.* FROM reading_sessions AS s JOIN reading_activity AS a ON a.id = s.id"
            " WHERE s.ended_at IS NULL ORDER BY s.started_at"
        )

    def end_reading(self) -> tuple[ReadingSession, ...]:
        """Ends this device's open sessions at their last progress."""
        with self.database.write_transaction():
            rows = self.database.get_all(
                "SELECT a.id, a.last_at FROM reading_activity AS a"
                " JOIN reading_sessions AS s ON s.id = a.id WHERE s.ended_at IS NULL"
            )
            batch = self.batch()
            for row in rows:
                batch.patch(ReadingSession.table, row["id"], {"ended_at": row["last_at"]})
            batch.apply()
            self.database.execute("DELETE FROM reading_activity")
            return tuple(self.sessions.require(str(r["id"])) for r in rows)
