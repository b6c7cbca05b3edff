"""`papyrus shelves|tags|series|highlights|notes|bookmarks|sessions|goals …` and `progress`.

Every group is generated from a small description of its entity (`Entity`: which columns its
commands take, as arguments or options, and which a list shows) over the generic repositories
of `papyrus.client.library`; how a column's text is read comes from its declaration (numbers,
flags, references found by id prefix or name, locations). The commands are thin: values are
checked by the repositories against the contract, and a refusal is one line and exit code 1.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from papyrus import contract
from papyrus.client.cli import (
    _client,
    _not_synced_note,
    _saved_note,
    console,
    err_console,
)
from papyrus.client.errors import PapyrusClientError
from papyrus.client.goals import GoalProgress
from papyrus.client.library import Library
from papyrus.client.records import RECORDS_BY_TABLE, Record
from papyrus.client.repository import Repository, searchable
from papyrus.client.validation import ValidationError
from papyrus.contract import ID, Column, Location, Type

# -- reading values from the command line -------------------------------------------------------

_PAGE = re.compile(r"^(?:p|page)?\s*(\d+)$", re.I)
_FRACTION = re.compile(r"^(\d*\.\d+|[01])$")


def parse_location(text: str) -> dict[str, Any]:
    """A place in a book from `120` or `p120` (a page), `42%` or `0.42` (a fraction),
    `epubcfi(...)` (a CFI), or several of them separated by commas (`p120,42%`)."""
    out: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.startswith("epubcfi("):
            out["cfi"] = part
        elif part.endswith("%"):
            try:
                out["fraction"] = float(part[:-1]) / 100
            except ValueError:
                raise _unreadable(text) from None
        elif match := _FRACTION.match(part):
            if "." not in part:  # a bare 0 or 1 is a page
                out["page"] = int(part)
            else:
                out["fraction"] = float(match.group(1))
        elif match := _PAGE.match(part):
            out["page"] = int(match.group(1))
        else:
            raise _unreadable(text)
    if not out:
        raise _unreadable(text)
    return out


def _unreadable(text: str) -> PapyrusClientError:
    return PapyrusClientError(
        f"cannot read the location {text!r}: give a page (120 or p120), a fraction (42% or "
        "0.42), an epubcfi(...), or several separated by commas"
    )


def show_location(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    parts = []
    if value.get("page") is not None:
        parts.append(f"p. {value['page']}")
    if value.get("fraction") is not None:
        parts.append(f"{value['fraction'] * 100:.0f}%")
    if value.get("cfi"):
        parts.append(str(value["cfi"]))
    return ", ".join(parts)


# -- entity descriptions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A column as a command-line parameter: an argument of `add` (`argument=True`) or an
    option `--flag` of `add` and `edit`."""

    column: str
    flag: str | None = None  # defaults to the column name with dashes
    help: str = ""
    argument: bool = False

    @property
    def option(self) -> str:
        return self.flag or self.column.replace("_", "-")


@dataclass(frozen=True)
class Entity:
    """One command group: `add`, `list`, `show`, `edit` and `rm` over the repository of
    `record`'s table, plus any `extra` commands."""

    command: str
    help: str
    record: type[Record]
    fields: tuple[Field, ...]
    columns: tuple[str, ...]
    """What `list` shows besides the id."""
    filters: tuple[Field, ...] = ()
    """Options of `list` that keep rows whose column equals the value."""
    commands: tuple[str, ...] = ("add", "list", "show", "edit", "rm")
    extra: tuple[tuple[str, Callable[..., None]], ...] = ()
    details: Callable[[Library, Any], list[tuple[str, str]]] | None = None
    """Rows `show` adds after the fields (a shelf's books, a goal's progress)."""
    defaults: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Fills in what `add` was not given."""
    after_list: Callable[[Library], None] | None = None
    """Prints more after a non-empty list (the goals' progress)."""

    def repository(self, library: Library) -> Repository[Any]:
        return library.repository(self.record.table.name)


def _described(table: str, column: str, *, label: str = "", more: str = "") -> str:
    """A help text from a column's declaration: its choices (`a, b or c`), or what its values
    look like (`Colour, #rrggbb`), so the help never drifts from what the contract accepts."""
    declared = contract.table(table).column(column)
    if declared.choices:
        *rest, last = declared.choices
        text = f"{', '.join(rest)} or {last}" if rest else last
    else:
        text = f"{label}, {declared.doc}"
    return f"{text} ({more})." if more else f"{text}."


def _book_titles(books: Iterable[Record]) -> str:
    return "; ".join(b.display_name for b in books)


def _goal_progress_rows(library: Library, goal: Any) -> list[tuple[str, str]]:
    progress = library.goals.progress(goal.id)
    if not progress:
        return []
    p = progress[0]
    last_day = p.period_end - timedelta(days=1)
    return [("progress", _progress_text(p)), ("period", f"{p.period_start} to {last_day}")]


def _progress_text(p: GoalProgress) -> str:
    reached = ", reached" if p.reached else ""
    return f"{p.done} of {p.target} {p.kind} ({p.fraction * 100:.0f}%{reached})"


# -- building the commands --------------------------------------------------------------------


def install(app: typer.Typer) -> None:
    """Adds a command group per entity and `progress` to the `papyrus` command line."""
    for entity in ENTITIES:
        group = typer.Typer(no_args_is_help=True, help=entity.help)
        for name in entity.commands:
            group.command(name)(_BUILDERS[name](entity))
        for name, command in entity.extra:
            group.command(name)(command)
        app.add_typer(group, name=entity.command)
    app.command("progress")(progress)


def _column(entity: Entity, name: str) -> Column:
    return entity.record.table.column(name)


def _parameter(entity: Entity, f: Field, *, for_edit: bool) -> inspect.Parameter:
    column = _column(entity, f.column)
    if column.type is Type.BOOLEAN:
        annotation: Any = Annotated[
            bool | None, typer.Option(f"--{f.option}/--not-{f.option}", help=f.help)
        ]
        return inspect.Parameter(
            f.column, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
        )
    if f.argument and not for_edit:
        annotation = Annotated[str, typer.Argument(help=f.help, show_default=False)]
        return inspect.Parameter(
            f.column, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation
        )
    annotation = Annotated[str | None, typer.Option(f"--{f.option}", help=f.help)]
    return inspect.Parameter(
        f.column, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


REF_ARGUMENT = Annotated[str, typer.Argument(help="Id, id prefix (as lists show) or name.")]
LIMIT = Annotated[int, typer.Option(min=1, help="Show at most this many.")]
OFFSET = Annotated[int, typer.Option(min=0, help="Skip this many first.")]


def _generated(
    name: str, doc: str, parameters: list[inspect.Parameter], body: Callable[[dict[str, Any]], None]
) -> Callable[..., None]:
    """A command function whose signature Typer reads from `parameters`."""
    ordered = sorted(parameters, key=lambda p: p.kind)

    def command(**values: Any) -> None:
        body(values)

    command.__name__ = name
    command.__doc__ = doc
    command.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]  # Typer reads it
    command.__annotations__ = {p.name: p.annotation for p in ordered}
    return command


def _add(entity: Entity) -> Callable[..., None]:
    parameters = [_parameter(entity, f, for_edit=False) for f in entity.fields]

    def body(values: dict[str, Any]) -> None:
        with _client() as app:
            library = app.library
            row = _read(entity, library, values)
            if entity.defaults is not None:
                row = entity.defaults(row)
            added = entity.repository(library).add(**row)
            console.print(f"Added {entity.record.noun}{_added(added)} ({added.id}).")
            _saved_note(app)

    return _generated(f"{entity.command}_add", f"Add a {entity.record.noun}.", parameters, body)


def _list(entity: Entity) -> Callable[..., None]:
    parameters = [_parameter(entity, f, for_edit=True) for f in entity.filters]
    if searchable(entity.record.table):
        parameters.append(
            inspect.Parameter(
                "search",
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[str | None, typer.Option(help="Text to look for.")],
            )
        )
    parameters += [
        inspect.Parameter("limit", inspect.Parameter.KEYWORD_ONLY, default=50, annotation=LIMIT),
        inspect.Parameter("offset", inspect.Parameter.KEYWORD_ONLY, default=0, annotation=OFFSET),
    ]
    nouns = entity.record.nouns

    def body(values: dict[str, Any]) -> None:
        limit, offset = values.pop("limit"), values.pop("offset")
        search = values.pop("search", None)
        with _client() as app:
            library = app.library
            repository = entity.repository(library)
            where = _read(entity, library, values)
            rows = repository.list(search=search, limit=limit, offset=offset, **where)
            total = repository.count(search=search, **where)
            if rows:
                console.print(_table(entity, library, rows))
                shown = f"{offset + 1}-{offset + len(rows)}" if len(rows) > 1 else str(offset + 1)
                more = offset + len(rows) < total
                hint = f"; --offset {offset + len(rows)} for more" if more else ""
                console.print(f"[dim]{shown} of {total} {nouns}{hint}[/dim]")
            elif total:
                console.print(f"No {nouns} past the first {total} (--offset {offset}).")
            else:
                console.print(f"No {nouns}.")
            if entity.after_list is not None and rows:
                entity.after_list(library)
            _not_synced_note(app)

    return _generated(
        f"{entity.command}_list", f"List {nouns}, a page at a time.", parameters, body
    )


def _show(entity: Entity) -> Callable[..., None]:
    parameters = [
        inspect.Parameter("ref", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=REF_ARGUMENT)
    ]

    def body(values: dict[str, Any]) -> None:
        with _client() as app:
            library = app.library
            found = entity.repository(library).resolve(values["ref"])
            table = RichTable(show_header=False, box=None)
            for name, value in found.to_dict().items():
                table.add_row(name, _cell(entity, library, name, value, full=True))
            for name, text in entity.details(library, found) if entity.details else ():
                table.add_row(name, text)
            console.print(table)

    return _generated(
        f"{entity.command}_show", f"Show every field of a {entity.record.noun}.", parameters, body
    )


def _edit(entity: Entity) -> Callable[..., None]:
    clearable = [
        f.option
        for f in entity.fields
        if not _column(entity, f.column).required and not _column(entity, f.column).immutable
    ]
    parameters = [
        inspect.Parameter("ref", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=REF_ARGUMENT),
        *(
            _parameter(entity, f, for_edit=True)
            for f in entity.fields
            if not _column(entity, f.column).immutable
        ),
        inspect.Parameter(
            "clear",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                list[str] | None,
                typer.Option(
                    "--clear",
                    metavar="FIELD",
                    help=f"Remove a field's value (repeatable): {', '.join(clearable) or 'none'}.",
                ),
            ],
        ),
    ]
    by_option = {f.option: f.column for f in entity.fields}

    def body(values: dict[str, Any]) -> None:
        ref, clear = values.pop("ref"), values.pop("clear") or []
        with _client() as app:
            library = app.library
            changes = _read(entity, library, values)
            for option in clear:
                if option not in clearable:
                    err_console.print(
                        f"Cannot clear {option!r}; clearable: {', '.join(clearable)}."
                    )
                    raise typer.Exit(2)
                if by_option[option] in changes:
                    err_console.print(f"Give either a new {option} or --clear {option}, not both.")
                    raise typer.Exit(2)
                changes[by_option[option]] = None
            repository = entity.repository(library)
            found = repository.resolve(ref)
            updated = repository.update(found.id, **changes)
            console.print(
                f"Updated {entity.record.noun} [bold]{escape(updated.display_name)}[/bold]."
            )
            _saved_note(app)

    return _generated(
        f"{entity.command}_edit",
        f"Change fields of a {entity.record.noun}; --clear FIELD empties one.",
        parameters,
        body,
    )


def _rm(entity: Entity) -> Callable[..., None]:
    parameters = [
        inspect.Parameter("ref", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=REF_ARGUMENT)
    ]

    def body(values: dict[str, Any]) -> None:
        with _client() as app:
            repository = entity.repository(app.library)
            found = repository.resolve(values["ref"])
            repository.delete(found.id)
            console.print(
                f"Deleted {entity.record.noun} [bold]{escape(found.display_name)}[/bold]."
            )
            _saved_note(app)

    return _generated(f"{entity.command}_rm", f"Delete a {entity.record.noun}.", parameters, body)


_BUILDERS: dict[str, Callable[[Entity], Callable[..., None]]] = {
    "add": _add,
    "list": _list,
    "show": _show,
    "edit": _edit,
    "rm": _rm,
}


def _read(entity: Entity, library: Library, values: dict[str, Any]) -> dict[str, Any]:
    """Typed values from the command line's text, by each column's declaration; options not
    given are left out."""
    out: dict[str, Any] = {}
    for name, text in values.items():
        if text is None:
            continue
        out[name] = read_value(library, entity.record.table.name, _column(entity, name), text)
    return out


def read_value(library: Library, table: str, column: Column, text: Any) -> Any:
    """One value from its command-line text: numbers, references (a row of the referenced
    table by id, id prefix or name) and locations are read; the rest is checked by the
    repository against the contract."""
    if not isinstance(text, str):
        return text  # a flag
    if column.type is Type.INTEGER:
        try:
            return int(text)
        except ValueError:
            reason = f"{column.name}: must be an integer."
            raise ValidationError(table, None, "invalid_value", reason) from None
    if column.type is Type.REAL:
        try:
            return float(text)
        except ValueError:
            reason = f"{column.name}: must be a number."
            raise ValidationError(table, None, "invalid_value", reason) from None
    if column.references is not None:
        return library.repository(column.references).resolve(text).id
    if isinstance(column.json, Location):
        return parse_location(text)
    return text


# -- tables -------------------------------------------------------------------------------------


def _table(entity: Entity, library: Library, rows: list[Any]) -> RichTable:
    headers = ["ID", *(c.replace("_id", "").replace("_", " ").capitalize() for c in entity.columns)]
    table = RichTable(*headers)
    for row in rows:
        table.add_row(
            row.id[:8],
            *(_cell(entity, library, c, getattr(row, c), full=False) for c in entity.columns),
        )
    return table


def _cell(entity: Entity, library: Library, name: str, value: Any, *, full: bool) -> str:
    if value is None or value in ([], {}):
        return ""
    if name in (ID, "owner_user_id"):
        return str(value)
    column = _column(entity, name)
    if column.references is not None:
        found = library.repository(column.references).get(str(value))
        shown = found.display_name if found is not None else str(value)
        return escape(shown if full else _short(shown, 30))
    if isinstance(column.json, Location):
        return escape(show_location(value))
    if column.type is Type.BOOLEAN:
        return "yes" if value else ("no" if full else "")
    if column.type is Type.TIMESTAMP and not full:
        try:
            return datetime.fromisoformat(str(value)).astimezone().strftime("%Y-%m-%d %H:%M")
        except ValueError:
            pass
    text = str(value)
    return escape(text if full else _short(text, 60))


def _named(row: Record) -> str:
    """` [bold]name[/bold]` for a row with a name, else its short id."""
    name = row.display_name
    return f" [bold]{escape(_short(name, 60))}[/bold]" if name != row.id else f" {row.id[:8]}"


def _added(row: Record) -> str:
    name = row.display_name
    return f" [bold]{escape(_short(name, 60))}[/bold]" if name != row.id else ""


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


PERIOD = "year"


def _goal_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """A goal is per year unless said otherwise, from the start of the current period (a
    period this does not know gets no default start: the repository then asks for one)."""
    row.setdefault("period", PERIOD)
    if "period_start" not in row:
        today = datetime.now(UTC).date()
        starts = {
            "year": date(today.year, 1, 1),
            "month": date(today.year, today.month, 1),
            "week": today - timedelta(days=today.weekday()),
        }
        if row["period"] in starts:
            row["period_start"] = starts[row["period"]].isoformat()
    return row


def _print_progress(library: Library) -> None:
    progress = library.goals.progress()
    if not progress:
        return
    table = RichTable("Goal", "Kind", "Period", "Done", "Progress")
    for p in progress:
        table.add_row(
            p.goal_id[:8],
            p.kind,
            f"{p.period_start} to {p.period_end - timedelta(days=1)}",
            f"{p.done} of {p.target}",
            f"{p.fraction * 100:.0f}%" + (" reached" if p.reached else ""),
        )
    console.print(table)


# -- memberships and progress -------------------------------------------------------------------

BookArg = Annotated[str, typer.Argument(help="The book: id, id prefix or title.")]


def shelve(
    book: BookArg,
    shelf: Annotated[str, typer.Argument(help="The shelf: id, id prefix or name.")],
) -> None:
    """Put a book on a shelf."""
    with _client() as app:
        library = app.library
        found, on = library.resolve(book), library.shelves.resolve(shelf)
        library.add_to_shelf(found, on)
        console.print(f"[bold]{escape(found.display_name)}[/bold] is on {escape(on.display_name)}.")
        _saved_note(app)


def unshelve(
    book: BookArg,
    shelf: Annotated[str, typer.Argument(help="The shelf: id, id prefix or name.")],
) -> None:
    """Take a book off a shelf."""
    with _client() as app:
        library = app.library
        found, on = library.resolve(book), library.shelves.resolve(shelf)
        if library.remove_from_shelf(found, on):
            console.print(
                f"Took [bold]{escape(found.display_name)}[/bold] off {escape(on.display_name)}."
            )
            _saved_note(app)
        else:
            console.print(f"{escape(found.display_name)} is not on {escape(on.display_name)}.")


def tag(
    book: BookArg,
    name: Annotated[str, typer.Argument(help="The tag: id, id prefix or name (made if new).")],
) -> None:
    """Tag a book; a tag name not used yet makes a new tag."""
    with _client() as app:
        library = app.library
        found = library.resolve(book)
        with library.database.write_transaction():
            try:
                label = library.tags.resolve(name)
            except PapyrusClientError:
                label = library.tags.add(name=name)
            library.tag(found, label)
        console.print(
            f"Tagged [bold]{escape(found.display_name)}[/bold] {escape(label.display_name)}."
        )
        _saved_note(app)


def untag(
    book: BookArg,
    name: Annotated[str, typer.Argument(help="The tag: id, id prefix or name.")],
) -> None:
    """Remove a tag from a book."""
    with _client() as app:
        library = app.library
        found, label = library.resolve(book), library.tags.resolve(name)
        if library.untag(found, label):
            shown = escape(found.display_name)
            console.print(f"Removed {escape(label.display_name)} from [bold]{shown}[/bold].")
            _saved_note(app)
        else:
            console.print(
                f"{escape(found.display_name)} is not tagged {escape(label.display_name)}."
            )


def progress(
    book: BookArg,
    position: Annotated[
        str,
        typer.Argument(
            help="Where you are: a page (120), a fraction (42%), an epubcfi(...), or several."
        ),
    ],
    finished: Annotated[
        bool, typer.Option("--finished", help="You finished the book (ends the session).")
    ] = False,
    stop: Annotated[
        bool, typer.Option("--stop", help="You stopped reading (ends the session).")
    ] = False,
) -> None:
    """Record where you are in a book: its position, last read time and reading session."""
    place = parse_location(position)
    with _client() as app:
        library = app.library
        found = library.resolve(book)
        done = library.record_progress(
            found,
            position=place.get("fraction"),
            page=place.get("page"),
            cfi=place.get("cfi"),
            finished=finished,
            stop=stop,
        )
        where = show_location(
            {
                "page": done.book.current_page,
                "fraction": done.book.current_position,
                "cfi": done.book.current_cfi,
            }
        )
        session = (
            "started a reading session" if done.new_session else "extended the reading session"
        )
        if done.session.ended_at is not None:
            session += ", ended now"
        console.print(f"[bold]{escape(found.display_name)}[/bold]: {escape(where)}; {session}.")
        _saved_note(app)


# -- the entities ---------------------------------------------------------------------------------

BOOK = Field("book_id", "book", "The book (id, id prefix or title).")
AT = Field("location", "at", "Where: a page (120), a fraction (42%), an epubcfi(...), or several.")

ENTITIES: tuple[Entity, ...] = (
    Entity(
        "series",
        "Series of books.",
        RECORDS_BY_TABLE["series"],
        (
            Field("name", help="Name.", argument=True),
            Field("author", help="Author."),
            Field("description", help="Description."),
            Field("total_books", "total", help="How many books the series has."),
        ),
        ("name", "author", "total_books"),
        details=lambda lib, s: [("books", _book_titles(lib.list(series_id=s.id)))],
    ),
    Entity(
        "shelves",
        "Shelves, and which books are on them.",
        RECORDS_BY_TABLE["shelves"],
        (
            Field("name", help="Name.", argument=True),
            Field("description", help="Description."),
            Field("color", help=_described("shelves", "color", label="Colour")),
            Field("parent_shelf_id", "parent", "The shelf this one sits on (id or name)."),
            Field("sort_order", "order", "Position among its siblings."),
        ),
        ("name", "parent_shelf_id", "color"),
        extra=(("shelve", shelve), ("unshelve", unshelve)),
        details=lambda lib, s: [("books", _book_titles(lib.books_on_shelf(s)))],
    ),
    Entity(
        "tags",
        "Tags, and which books carry them.",
        RECORDS_BY_TABLE["tags"],
        (
            Field("name", help="Name (unique, ignoring case).", argument=True),
            Field("color", help=_described("tags", "color", label="Colour")),
        ),
        ("name", "color"),
        extra=(("tag", tag), ("untag", untag)),
        details=lambda lib, t: [("books", _book_titles(lib.books_tagged(t)))],
    ),
    Entity(
        "highlights",
        "Highlights: passages of a book, in a colour, with a note.",
        RECORDS_BY_TABLE["annotations"],
        (
            Field("book_id", "book", "The book (id, id prefix or title).", argument=True),
            Field("selected_text", "text", "The highlighted text.", argument=True),
            Field("location", "at", AT.help),
            Field("color", help=_described("annotations", "color")),
            Field("note", help="A note on it."),
        ),
        ("book_id", "selected_text", "location", "color", "note"),
        filters=(BOOK,),
    ),
    Entity(
        "notes",
        "Notes, about a book or free-standing.",
        RECORDS_BY_TABLE["notes"],
        (
            Field("title", help="Title."),
            Field("content", help="Text."),
            BOOK,
            AT,
            Field("pinned", help="Pinned."),
        ),
        ("title", "book_id", "content", "pinned"),
        filters=(BOOK,),
    ),
    Entity(
        "bookmarks",
        "Bookmarks: saved places in books.",
        RECORDS_BY_TABLE["bookmarks"],
        (
            Field("book_id", "book", "The book (id, id prefix or title).", argument=True),
            Field("location", "at", AT.help, argument=True),
            Field("label", help="Label."),
        ),
        ("book_id", "location", "label"),
        filters=(BOOK,),
    ),
    Entity(
        "sessions",
        "Reading sessions (`papyrus progress` records them; closed ones are history).",
        RECORDS_BY_TABLE["reading_sessions"],
        (),
        ("book_id", "started_at", "ended_at", "pages_read", "device_label"),
        filters=(BOOK,),
        commands=("list", "show", "rm"),
    ),
    Entity(
        "goals",
        "Reading goals and how far along they are.",
        RECORDS_BY_TABLE["reading_goals"],
        (
            Field("kind", help=_described("reading_goals", "kind"), argument=True),
            Field("target", help="How many.", argument=True),
            Field("period", help=_described("reading_goals", "period", more=f"default: {PERIOD}")),
            Field("period_start", "start", "First day, YYYY-MM-DD (default: this period's)."),
            Field("active", help="Counted (the default) or put aside."),
        ),
        ("kind", "target", "period", "period_start", "active"),
        details=_goal_progress_rows,
        defaults=_goal_defaults,
        after_list=_print_progress,
    ),
)
