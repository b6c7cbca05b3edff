"""The library's commands as a user runs them: shelves, tags, series, highlights, notes,
bookmarks, sessions, goals and progress, in the guest library and against the stack."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from papyrus import contract
from papyrus.client.books import ReadingStatus
from tests.client.stack import Stack
from tests.client.test_cli import PASSWORD, run


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PAPYRUS_CLIENT_DIR": str(tmp_path / "cli"),
        "PAPYRUS_TOKEN_STORE": "file",
        "PAPYRUS_API_URL": "http://127.0.0.1:9",  # nothing listens: local commands only
        "POWERSYNC_SERVICE_URL": "http://127.0.0.1:9",
        "PAPYRUS_DEVICE_LABEL": "terminal",
        "COLUMNS": "200",
    }


def short_id(listing: str, text: str) -> str:
    """The id of the listed row whose first column after the id starts with `text` (or, when
    none does, any of its columns)."""
    rows = [[c.strip() for c in line.split("│")] for line in listing.splitlines()]
    rows = [cells for cells in rows if len(cells) > 3]
    for first in (True, False):
        for cells in rows:
            if any(c.startswith(text) for c in (cells[2:3] if first else cells[2:])):
                return cells[1]
    raise AssertionError(f"no row for {text!r} in:\n{listing}")


def test_shelves_from_the_command_line(env: dict[str, str]) -> None:
    run(env, "books", "add", "Dune")
    run(env, "books", "add", "Emma")
    assert "Added shelf To read" in run(env, "shelves", "add", "To read", "--color", "#aa0000")
    run(env, "shelves", "add", "Later", "--parent", "to read")  # by name, ignoring case
    listing = run(env, "shelves", "list")
    assert re.search(r"Later\s+│\s+To read", listing) and "1-2 of 2 shelves" in listing
    assert "Dune is on To read" in run(env, "shelves", "shelve", "Dune", "To read")
    run(env, "shelves", "shelve", "Emma", "To read")
    run(env, "shelves", "shelve", "Dune", "To read")  # again: nothing new
    shown = run(env, "shelves", "show", short_id(listing, "To read"))
    assert re.search(r"^\s*books\s+Dune; Emma\s*$", shown, re.M)
    assert re.search(r"^\s*shelves\s+To read\s*$", run(env, "books", "show", "Dune"), re.M)
    assert "Took Dune off To read" in run(env, "shelves", "unshelve", "Dune", "To read")
    assert re.search(r"^\s*books\s+Emma\s*$", run(env, "shelves", "show", "To read"), re.M)

    out = run(env, "shelves", "edit", "To read", "--parent", "Later", code=1)
    assert "parent_shelf_id: would make this shelves row its own ancestor." in out
    assert len(out.strip().splitlines()) == 1  # one line, no traceback
    out = run(env, "shelves", "add", "Bad", "--color", "red", code=1)
    assert "color: must be a string of 7 to 7 characters." in out
    assert "Bad" not in run(env, "shelves", "list")
    run(env, "shelves", "edit", "Later", "--clear", "parent", "--description", "someday")
    shown = run(env, "shelves", "show", "Later")
    assert "someday" in shown and not re.search(r"^[ \t]*parent_shelf_id[ \t]+\S", shown, re.M)
    assert "Cannot clear 'name'" in run(env, "shelves", "edit", "Later", "--clear", "name", code=2)

    assert "Deleted shelf To read" in run(env, "shelves", "rm", "To read")
    assert "To read" not in run(env, "shelves", "list")
    assert re.search(r"^[ \t]*shelves[ \t]*$", run(env, "books", "show", "Emma"), re.M)


def test_tags_from_the_command_line(env: dict[str, str]) -> None:
    run(env, "books", "add", "Dune")
    assert "Tagged Dune Sci-Fi" in run(env, "tags", "tag", "Dune", "Sci-Fi")  # a new tag
    assert "Tagged Dune Sci-Fi" in run(env, "tags", "tag", "Dune", "sci-fi")  # the same one
    listing = run(env, "tags", "list")
    assert "1 of 1 tags" in listing
    out = run(env, "tags", "add", "SCI-FI", code=1)
    assert "name: another of your tags rows already has this value." in out
    assert re.search(r"^\s*tags\s+Sci-Fi\s*$", run(env, "books", "show", "Dune"), re.M)
    assert "Removed Sci-Fi from Dune" in run(env, "tags", "untag", "Dune", "Sci-Fi")
    assert "is not tagged" in run(env, "tags", "untag", "Dune", "Sci-Fi")


def test_highlights_notes_and_bookmarks(env: dict[str, str]) -> None:
    run(env, "books", "add", "Dune")
    run(env, "books", "add", "Emma")
    run(env, "highlights", "add", "Dune", "Fear is the mind-killer", "--at", "p12,5%")
    run(env, "highlights", "add", "Emma", "Badly done", "--at", "epubcfi(/6/4)", "--color", "blue")
    listing = run(env, "highlights", "list", "--book", "Dune")
    assert "Fear is the mind-killer" in listing and "p. 12, 5%" in listing
    assert "Badly done" not in listing
    assert "2 highlights" in run(env, "highlights", "list")
    out = run(env, "highlights", "add", "Dune", "x", "--at", "3", "--color", "red", code=1)
    assert "color: must be one of yellow, green, blue, pink, purple, orange." in out
    out = run(env, "highlights", "add", "Nope", "x", "--at", "3", code=1)
    assert "no book with an id starting with 'Nope'" in out
    out = run(env, "highlights", "add", "Dune", "x", "--at", "chapter two", code=1)
    assert "cannot read the location 'chapter two'" in out
    mark = short_id(listing, "Fear")
    run(env, "highlights", "edit", mark, "--note", "Litany")
    assert "Litany" in run(env, "highlights", "show", mark)
    run(env, "highlights", "edit", mark, "--clear", "note")
    assert "Litany" not in run(env, "highlights", "show", mark)
    run(env, "highlights", "rm", mark)
    assert "1 of 1 highlights" in run(env, "highlights", "list")

    run(env, "notes", "add", "--title", "Themes", "--content", "ecology", "--book", "Dune")
    run(env, "notes", "add", "--title", "Loose thought", "--pinned")
    notes = run(env, "notes", "list", "--search", "ECOLOGY")
    assert "Themes" in notes and "Loose thought" not in notes
    assert re.search(r"Loose thought.*yes", run(env, "notes", "list"))

    run(env, "bookmarks", "add", "Dune", "42%", "--label", "Arrakis")
    bookmarks = run(env, "bookmarks", "list")
    assert "Arrakis" in bookmarks and "42%" in bookmarks
    run(env, "books", "rm", "Dune")  # its highlights, notes and bookmarks go with it
    assert "No bookmarks." in run(env, "bookmarks", "list")
    assert "Themes" not in run(env, "notes", "list")


def test_progress_sessions_goals_and_series(env: dict[str, str]) -> None:
    run(env, "books", "add", "Dune", "--pages", "400", "--series", "Dune Chronicles")
    run(env, "books", "add", "Dune Messiah", "--series", "dune chronicles", "--series-number", "2")
    series = run(env, "series", "list")
    assert "1 of 1 series" in series and "Dune Chronicles" in series
    assert re.search(r"books\s+Dune; Dune Messiah", run(env, "series", "show", "Dune Chronicles"))

    assert "started a reading session" in run(env, "progress", "Dune", "p100")
    out = run(env, "progress", "Dune", "120")
    assert "Dune: p. 120, 30%; extended the reading session." in out
    shown = run(env, "books", "show", "Dune")
    assert re.search(r"^\s*current_page\s+120\s*$", shown, re.M)
    assert re.search(r"^\s*reading_status\s+reading\s*$", shown, re.M)
    sessions = run(env, "sessions", "list", "--book", "Dune")
    assert "1 of 1 reading sessions" in sessions and "terminal" in sessions
    assert "ended now" in run(env, "progress", "Dune", "400", "--finished")
    finished = run(env, "books", "show", "Dune")
    assert re.search(r"^\s*reading_status\s+finished\s*$", finished, re.M)
    session = short_id(sessions, "Dune")
    out = run(env, "sessions", "rm", session, code=1)
    assert "reading_sessions rows are history once ended_at is set." in out

    year = str(__import__("datetime").date.today().year)
    assert "Added reading goal" in run(env, "goals", "add", "books", "12")
    run(env, "goals", "add", "pages", "100", "--period", "week")
    goals = run(env, "goals", "list")
    assert f"{year}-01-01" in goals and "1 of 12" in goals  # Dune was finished today
    out = run(env, "goals", "add", "chapters", "3", code=1)
    assert "kind: must be one of books, pages, minutes." in out
    out = run(env, "goals", "add", "books", "lots", code=1)
    assert "target: must be an integer." in out
    goal = short_id(goals, "books")
    run(env, "goals", "edit", goal, "--not-active")
    assert "1 of 12" not in run(env, "goals", "list")
    assert re.search(r"progress\s+1 of 12 books", run(env, "goals", "show", goal))


def test_lists_page_and_say_how_many(env: dict[str, str]) -> None:
    for name in ("alpha", "beta", "gamma"):
        run(env, "tags", "add", name)
    out = run(env, "tags", "list", "--limit", "2")
    assert "1-2 of 3 tags; --offset 2 for more" in out and "gamma" not in out
    out = run(env, "tags", "list", "--limit", "2", "--offset", "2")
    assert "3 of 3 tags" in out and "gamma" in out and "alpha" not in out
    assert "No tags past the first 3" in run(env, "tags", "list", "--offset", "5")


def test_the_library_commands_against_the_stack(stack: Stack, env: dict[str, str]) -> None:
    env = {**env, "PAPYRUS_API_URL": stack.api_url, "POWERSYNC_SERVICE_URL": stack.sync_url}
    secret = f"{PASSWORD}\n{PASSWORD}\n"
    run(env, "register", "--email", "ada@example.com", "--name", "Ada", input=secret)
    run(env, "books", "add", "Dune")
    out = run(env, "shelves", "add", "Favourites")
    assert "2 change(s) waiting to upload" in out  # the book and the shelf
    run(env, "shelves", "shelve", "Dune", "Favourites")
    run(env, "highlights", "add", "Dune", "Fear", "--at", "p3")
    run(env, "progress", "Dune", "p10")
    assert "Synced." in run(env, "sync", "now", "--timeout", "60")
    assert stack.sql("SELECT name FROM shelves") == [("Favourites",)]
    assert stack.sql("SELECT count(*) FROM book_shelves") == [(1,)]
    assert stack.sql("SELECT selected_text FROM annotations") == [("Fear",)]
    assert stack.sql("SELECT device_label FROM reading_sessions") == [("terminal",)]

    # Another device deletes the book while this one, offline, highlights it again.
    phone = stack.client("phone")
    phone.sign_in("ada@example.com", PASSWORD)
    assert phone.sync_now(60).synced
    run(env, "highlights", "add", "Dune", "Late", "--at", "p4")
    [book] = phone.library.list()
    phone.library.delete(book.id)
    assert phone.sync_now(60).synced
    out = run(env, "sync", "now", "--timeout", "60")
    assert "1 change(s) were dropped: their row (or its book) was deleted meanwhile" in out
    assert "parent_deleted" in out and "Synced." in out
    assert "parent_deleted" in run(env, "sync", "rejections")
    assert "No highlights." in run(env, "highlights", "list")


def test_the_commands_offer_what_the_contract_declares(env: dict[str, str]) -> None:
    """Choices, ranges and help texts come from the declarations, never a hand copy that could
    offer what the server refuses (or miss what it accepts)."""
    books = contract.table("books")
    statuses = books.column("reading_status").choices
    assert tuple(status.value for status in ReadingStatus) == statuses
    for name in ("add", "edit", "list"):
        assert f"<{'|'.join(statuses)}>" in _help(env, "books", name)
    run(env, "books", "add", "Dune", "--status", statuses[-1])
    assert "Invalid value" in run(env, "books", "add", "Emma", "--status", "paused", code=2)

    low, high = (int(bound) for bound in books.column("rating").range or ())
    assert f"Rating, {low} to {high}." in _help(env, "books", "add")
    run(env, "books", "edit", "Dune", "--rating", str(high))
    assert "Invalid value" in run(env, "books", "edit", "Dune", "--rating", str(high + 1), code=2)
    assert "Invalid value" in run(env, "books", "edit", "Dune", "--pages", "-1", code=2)

    for group, table, column in (
        ("highlights", "annotations", "color"),
        ("goals", "reading_goals", "kind"),
        ("goals", "reading_goals", "period"),
    ):
        choices = contract.table(table).column(column).choices
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}"
        for name in ("add", "edit"):
            assert listed in _help(env, group, name), (group, name, column)


def _help(env: dict[str, str], *command: str) -> str:
    """A command's help as one line (the table of options wraps long texts)."""
    text = run({**env, "COLUMNS": "400"}, *command, "--help")
    return re.sub(r"\s*│\s*", " ", text)
