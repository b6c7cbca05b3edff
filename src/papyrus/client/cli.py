"""`papyrus` client commands: accounts, the library, and sync. Never imports server code."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import apsw
import httpx
import typer
from keyring.errors import KeyringError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from papyrus import contract
from papyrus.client.auth import GOOGLE_CALLBACK_PORT
from papyrus.client.books import Book, BookFilter, BookRepository, BookSort, ReadingStatus
from papyrus.client.config import PapyrusApiConfig
from papyrus.client.database import PowerSyncDatabase
from papyrus.client.errors import (
    AccountDeletedError,
    ApiError,
    NotFoundError,
    PapyrusClientError,
    PendingChangesError,
    TransientError,
)
from papyrus.client.library import Library
from papyrus.client.provider import AuthProvider, AuthState, SignOutResult
from papyrus.client.sync import SyncStatus

console = Console()
err_console = Console(stderr=True)

books_app = typer.Typer(no_args_is_help=True, help="Your library (works offline).")
sync_app = typer.Typer(no_args_is_help=True, help="Syncing the library with the server.")
password_app = typer.Typer(no_args_is_help=True, help="Forgotten and changed passwords.")
email_app = typer.Typer(no_args_is_help=True, help="The account's email address.")
account_app = typer.Typer(
    no_args_is_help=True, help="Deleting the account, or exporting what the server holds."
)


def install(app: typer.Typer) -> None:
    """Adds the client commands to the `papyrus` command line."""
    app.command("register")(register)
    app.command("login")(login)
    app.command("login-google")(login_google)
    app.command("logout")(logout)
    app.command("status")(status)
    app.command("offline")(offline)
    app.add_typer(books_app, name="books")
    app.add_typer(sync_app, name="sync")
    app.add_typer(password_app, name="password")
    app.add_typer(email_app, name="email")
    app.add_typer(account_app, name="account")
    from papyrus.client import cli_library  # it builds on this module's helpers

    cli_library.install(app)


@contextmanager
def _client(*, verify: bool = False) -> Iterator[AuthProvider]:
    """An AuthProvider for one command. Client errors and configuration mistakes (a bad
    variable, an unusable directory or database file, a keyring that refuses) become one line
    and exit code 1, never a traceback."""
    try:
        with AuthProvider(PapyrusApiConfig.from_environment(), auto_connect=False) as app:
            noted: list[bool] = []
            try:
                app.bootstrap(verify=verify)
                _deletion_note(app, noted)
                yield app
            finally:
                _deletion_note(app, noted)
    except AccountDeletedError:
        raise typer.Exit(1) from None  # the note above said what happened
    except PapyrusClientError as exc:
        _fail(error_text(exc))
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot use{where}: {exc.strerror or exc}. Check PAPYRUS_CLIENT_DIR.")
    except apsw.Error as exc:
        _fail(f"the local database failed: {exc}")
    except KeyringError as exc:
        _fail(f"the system keyring failed: {exc}. PAPYRUS_TOKEN_STORE=file avoids the keyring.")


def _deletion_note(app: AuthProvider, noted: list[bool]) -> None:
    """Once per command: the account turned out to be deleted, and what that removed here
    (the one case where unsent changes are discarded: said, never silent)."""
    deletion = app.account_deletion
    if deletion is not None and not noted:
        noted.append(True)
        err_console.print(f"[yellow]{escape(deletion.describe())}[/yellow]", soft_wrap=True)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[red]Error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def error_text(exc: PapyrusClientError) -> str:
    """The error with what the server said about it: which field and why, how long to wait."""
    if isinstance(exc, ApiError):
        detail = _details_text(exc.details)
        return f"{exc.message}{' ' + detail if detail else ''} ({exc.code}, HTTP {exc.status_code})"
    text = str(exc)
    if isinstance(exc, TransientError):
        detail = _details_text(exc.details, skip=("retry_after",))
        if detail:
            text += f" {detail}"
        if exc.retry_after is not None:
            text += f" Retry in {_duration(exc.retry_after)}."
    return text


def _details_text(details: Any, skip: tuple[str, ...] = ()) -> str:
    if not details:
        return ""
    if isinstance(details, list):  # validation errors: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for item in details:
            if isinstance(item, dict) and "msg" in item:
                loc = [str(p) for p in item.get("loc") or [] if p not in ("body", "query")]
                parts.append(f"{'.'.join(loc)}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        text = "; ".join(parts)
        return text if text.endswith((".", "!", "?")) else text + "."
    if isinstance(details, dict):
        shown = [f"{k}: {v}" for k, v in details.items() if k not in skip]
        return f"({', '.join(shown)})" if shown else ""
    return str(details)


def _duration(seconds: float) -> str:
    whole = max(1, math.ceil(seconds))
    return f"{whole} s" if whole < 120 else f"{math.ceil(whole / 60)} min"


PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (for scripts).",
    ),
]


def _password(
    from_stdin: bool,
    *,
    confirm: bool = False,
    prompt: str = "Password",
    env: str = "PAPYRUS_PASSWORD",
) -> str:
    """From stdin (`--password-stdin`, one line per password asked), the variable `env`, or a
    hidden prompt; never from the command line, where other users and the shell history would
    see it."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise PapyrusClientError(f"--password-stdin: standard input held no {prompt.lower()}")
        return line
    from_env = os.environ.get(env)
    if from_env:
        return from_env
    typed: str = typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return typed


def _saved_note(app: AuthProvider) -> None:
    if app.state is AuthState.SIGNED_IN:
        queued = app.database.upload_queue_size()
        owner = app.database.sync_owner_pid
        if owner is not None:
            console.print(
                f"[dim]{queued} change(s) waiting to upload; process {owner} is syncing them.[/dim]"
            )
        else:
            console.print(
                f"[dim]{queued} change(s) waiting to upload: run `papyrus sync now`.[/dim]"
            )


# -- accounts -------------------------------------------------------------------------------

EmailOpt = Annotated[str, typer.Option(prompt=True, help="Account email.")]
DiscardOpt = Annotated[
    bool,
    typer.Option(
        "--discard-pending",
        help="Delete changes on this device that have not been uploaded yet, instead of refusing.",
    ),
]


@contextmanager
def _unless_pending(app: AuthProvider, command: str) -> Iterator[None]:
    """A refusal to delete unsent changes: how many, and the two ways forward; exit code 1."""
    try:
        yield
    except PendingChangesError as exc:
        err_console.print(f"[red]Refused:[/red] {exc}.")
        owner = exc.owner_email
        signed_in_as_owner = app.state is AuthState.SIGNED_IN and (
            owner is None or (app.user is not None and app.user.email == owner)
        )
        upload = (
            "`papyrus sync now`"
            if signed_in_as_owner
            else f"sign in as {owner or 'their account'} again, then `papyrus sync now`"
        )
        err_console.print(f"  To upload them first: {upload}")
        err_console.print(f"  To delete them:       `papyrus {command} --discard-pending`")
        raise typer.Exit(1) from None


def _server_note(result: SignOutResult) -> None:
    if not result.server_session_ended:
        err_console.print(
            "[yellow]The server session could not be ended[/yellow] "
            f"({result.server_error}); it stays valid on the server until it expires. "
            "End it from another device with `papyrus logout --all-devices`."
        )


def register(
    email: EmailOpt,
    name: Annotated[str, typer.Option(prompt="Display name", help="Your name.")],
    password_stdin: PasswordStdinOpt = False,
    discard_pending: DiscardOpt = False,
) -> None:
    """Create an account and sign in. The password is asked for (hidden), or read from
    PAPYRUS_PASSWORD or, with --password-stdin, from standard input."""
    with _client() as app, _unless_pending(app, "register"):
        password = _password(password_stdin, confirm=True)
        user = app.register(email, password, name, discard_pending=discard_pending)
        console.print(f"Signed in as [bold]{user.email}[/bold].")


def login(
    email: EmailOpt,
    password_stdin: PasswordStdinOpt = False,
    discard_pending: DiscardOpt = False,
) -> None:
    """Sign in with email and password (a failed sign-in keeps the current session). The
    password is asked for (hidden), or read from PAPYRUS_PASSWORD or, with --password-stdin,
    from standard input."""
    with _client() as app, _unless_pending(app, "login"):
        user = app.sign_in(email, _password(password_stdin), discard_pending=discard_pending)
        console.print(f"Signed in as [bold]{user.email}[/bold].")


def login_google(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the URL instead of opening a browser.")
    ] = False,
    port: Annotated[
        int, typer.Option(help="Loopback port for the callback.")
    ] = GOOGLE_CALLBACK_PORT,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the browser.")] = 300,
    discard_pending: DiscardOpt = False,
) -> None:
    """Sign in with Google in the browser."""
    with _client() as app, _unless_pending(app, "login-google"):
        browser = app.open_browser

        def open_page(url: str) -> None:
            _check_start_url(app, url)  # a server without Google sign-in fails here, at once
            # Printed whole (no wrapping), so it can be copied into any browser.
            console.print("Open this page to sign in:" if no_browser else "Opening:")
            console.print(url, soft_wrap=True, markup=False, highlight=False)
            if not no_browser:
                browser(url)
            console.print("Waiting for the browser sign-in…")

        app.open_browser = open_page
        user = app.sign_in_with_google(port=port, timeout=timeout, discard_pending=discard_pending)
        console.print(f"Signed in as [bold]{user.email}[/bold].")


def _check_start_url(app: AuthProvider, url: str) -> None:
    """Asks for the sign-in page before sending anyone to it, so an error the server would
    show in the browser (503: Google sign-in not configured, 429) is reported here instead of
    after a wait. A successful answer is a redirect to Google; its state is never used."""
    try:
        resp = app.api.http.get(url, headers={"Accept": "application/json"})
    except httpx.TransportError as exc:
        raise TransientError(
            f"cannot reach the Papyrus API at {app.config.api_url}: {exc}"
        ) from exc
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        code, message, details = err["code"], err["message"], err.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", resp.reason_phrase, None
    raise ApiError(resp.status_code, code, message, details)


def logout(
    all_devices: Annotated[bool, typer.Option(help="End the sessions of every device.")] = False,
    discard_pending: DiscardOpt = False,
) -> None:
    """Sign out and delete this device's copy of the account's data (refused while changes
    wait to upload, unless --discard-pending)."""
    with _client() as app, _unless_pending(app, "logout"):
        if app.state is not AuthState.SIGNED_IN and not app.powersync.has_data():
            console.print("Not signed in.")
            return
        result = app.sign_out(all_devices=all_devices, discard_pending=discard_pending)
        console.print("Signed out. The account's data was removed from this device.")
        _server_note(result)


def status() -> None:
    """Who is signed in, which library is live, and how sync stands."""
    with _client() as app:
        table = Table(show_header=False, box=None)
        table.add_row("State", str(app.state))
        if app.user:
            table.add_row("User", f"{app.user.email} ({app.user.id})")
        table.add_row("API", app.config.api_url)
        table.add_row("Sync service", app.config.powersync_url)
        table.add_row("Token store", app.auth.tokens.backend.name)
        table.add_row("Library", app.database.path)
        table.add_row("Books", str(BookRepository(app.database).count()))
        if app.state is AuthState.SIGNED_IN:
            _status_rows(table, app.database)
        elif app.powersync.has_data():
            owner = app.powersync.owner() or {}
            table.add_row(
                "Kept on this device",
                f"the data of {owner.get('email', 'a signed-out account')}, with "
                f"{app.pending_changes()} change(s) waiting to upload (sign in again to sync)",
            )
        console.print(table)
        _not_synced_note(app)


def offline(
    mode: Annotated[str, typer.Argument(help="on or off", metavar="on|off")],
    discard_pending: DiscardOpt = False,
) -> None:
    """Turn offline mode on (sign out, stop syncing, use the guest library) or off."""
    if mode not in ("on", "off"):
        err_console.print("Say `papyrus offline on` or `papyrus offline off`.")
        raise typer.Exit(2)
    with _client() as app, _unless_pending(app, "offline on"):
        result = app.set_offline_mode(mode == "on", discard_pending=discard_pending)
        console.print(
            "Offline mode is on: the guest library is in use."
            if mode == "on"
            else "Offline mode is off. Sign in with `papyrus login`."
        )
        _server_note(result)


# -- books ----------------------------------------------------------------------------------


def _books_table(books: list[Book]) -> Table:
    table = Table("ID", "Title", "Author", "Status", "★", "Rating", "Pages")
    for b in books:
        table.add_row(
            b.id[:8],
            b.title or "",
            b.author or "",
            b.reading_status or "",
            "★" if b.is_favorite else "",
            str(b.rating or ""),
            str(b.page_count or ""),
        )
    return table


def _resolve(books: BookRepository, ref: str) -> Book:
    """A book by full id, title or unambiguous id prefix (as `books list` shows ids)."""
    return books.resolve(ref)


def _series(library: Library, ref: str | None) -> str | None:
    """The id of the series named (by id, id prefix or name); a new name makes a new series."""
    if ref is None:
        return None
    try:
        return library.series.resolve(ref).id
    except NotFoundError:
        return library.series.add(name=ref).id


def _value(status: ReadingStatus | None) -> str | None:
    return status.value if status is not None else None


def _bounds(column: str) -> dict[str, int]:
    """The declared range of an integer column of books, as an option's `min` and `max`."""
    declared = contract.table("books").column(column).range
    assert declared is not None, column
    return {"min": int(declared[0]), "max": int(declared[1])}


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


AuthorOpt = Annotated[str | None, typer.Option(help="Author.")]
StatusOpt = Annotated[ReadingStatus | None, typer.Option("--status", help="Reading status.")]
FavOpt = Annotated[bool | None, typer.Option("--favorite/--not-favorite", help="Favourite.")]
_RATING = _bounds("rating")
RatingOpt = Annotated[
    int | None, typer.Option(**_RATING, help=f"Rating, {_RATING['min']} to {_RATING['max']}.")
]
PagesOpt = Annotated[
    int | None, typer.Option("--pages", **_bounds("page_count"), help="Page count.")
]
IsbnOpt = Annotated[str | None, typer.Option(help="ISBN-13.")]
SeriesOpt = Annotated[
    str | None, typer.Option(help="Series: id, id prefix or name (a new name makes one).")
]
SeriesNumberOpt = Annotated[
    float | None, typer.Option("--series-number", help="Number in the series (1, 2.5).")
]


@books_app.command("add")
def books_add(
    title: Annotated[str, typer.Argument(help="Title.")],
    author: AuthorOpt = None,
    reading_status: StatusOpt = None,
    favorite: FavOpt = None,
    rating: RatingOpt = None,
    pages: PagesOpt = None,
    isbn: IsbnOpt = None,
    series: SeriesOpt = None,
    series_number: SeriesNumberOpt = None,
) -> None:
    """Add a book."""
    with _client() as app:
        library = app.library
        with library.database.write_transaction():
            book = library.add(
                title,
                **_fields(
                    author=author,
                    reading_status=_value(reading_status),
                    is_favorite=favorite,
                    rating=rating,
                    page_count=pages,
                    isbn13=isbn,
                    series_id=_series(library, series),
                    series_number=series_number,
                ),
            )
        console.print(f"Added [bold]{book.title}[/bold] ({book.id}).")
        _saved_note(app)


@books_app.command("list")
def books_list(
    reading_status: StatusOpt = None,
    favorite: FavOpt = None,
    search: Annotated[str | None, typer.Option(help="Text in title, author or subtitle.")] = None,
    sort: Annotated[BookSort, typer.Option(help="Sort by.")] = BookSort.title,
    desc: Annotated[bool, typer.Option("--desc", help="Descending order.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
) -> None:
    """List books as a table, a page at a time (--limit, --offset)."""
    query = BookFilter(
        reading_status=_value(reading_status),
        favorite=favorite,
        search=search,
        sort=sort,
        descending=desc,
        limit=limit,
        offset=offset,
    )
    with _client() as app:
        books = app.library.list(query)
        total = app.library.count(query)
        if books:
            console.print(_books_table(books))
            shown = f"{offset + 1}-{offset + len(books)}" if len(books) > 1 else str(offset + 1)
            more = offset + len(books) < total
            hint = f"; --offset {offset + len(books)} for more" if more else ""
            console.print(f"[dim]{shown} of {total} book(s){hint}[/dim]")
        elif total:
            console.print(f"No books past the first {total} (--offset {offset}).")
        else:
            console.print("No books.")
        _not_synced_note(app)


def _not_synced_note(app: AuthProvider) -> None:
    """Signed in on a device that never synced: the library is not here yet."""
    if app.state is AuthState.SIGNED_IN and not app.database.status.has_synced:
        console.print(
            "Nothing has been synced to this device yet: run `papyrus sync now` to download "
            "your library.",
            soft_wrap=True,
        )


@books_app.command("show")
def books_show(book_id: Annotated[str, typer.Argument(help="Id or id prefix.")]) -> None:
    """Show every field of one book."""
    with _client() as app:
        try:
            book = _resolve(app.library, book_id)
        except NotFoundError:
            _not_synced_note(app)
            raise
        library = app.library
        table = Table(show_header=False, box=None)
        for name, value in book.to_dict().items():
            if name == "series_id" and value is not None:
                found = library.series.get(str(value))
                value = f"{found.display_name} ({value})" if found else value
            table.add_row(name, "" if value in (None, [], {}) else str(value))
        table.add_row("shelves", "; ".join(s.display_name for s in library.shelves_of(book)))
        table.add_row("tags", "; ".join(t.display_name for t in library.tags_of(book)))
        console.print(table)


CLEARABLE = {
    "author": "author",
    "status": "reading_status",
    "favorite": "is_favorite",
    "rating": "rating",
    "pages": "page_count",
    "current-page": "current_page",
    "isbn": "isbn13",
    "series": "series_id",
    "series-number": "series_number",
}


@books_app.command("edit")
def books_edit(
    book_id: Annotated[str, typer.Argument(help="Id or id prefix.")],
    title: Annotated[str | None, typer.Option(help="Title.")] = None,
    author: AuthorOpt = None,
    reading_status: StatusOpt = None,
    favorite: FavOpt = None,
    rating: RatingOpt = None,
    pages: PagesOpt = None,
    current_page: Annotated[int | None, typer.Option(help="Current page.")] = None,
    series: SeriesOpt = None,
    series_number: SeriesNumberOpt = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            metavar="FIELD",
            help=f"Remove a field's value (repeatable): {', '.join(CLEARABLE)}.",
        ),
    ] = None,
) -> None:
    """Change fields of a book; --clear FIELD empties one (e.g. --clear rating)."""
    changes = _fields(
        title=title,
        author=author,
        reading_status=_value(reading_status),
        is_favorite=favorite,
        rating=rating,
        page_count=pages,
        current_page=current_page,
        series_number=series_number,
    )
    if series is not None:
        changes["series_id"] = series  # resolved below, with the library open
    for name in clear or []:
        column = CLEARABLE.get(name)
        if column is None:
            err_console.print(f"Cannot clear {name!r}; clearable: {', '.join(CLEARABLE)}.")
            raise typer.Exit(2)
        if column in changes:
            err_console.print(f"Give either a new {name} or --clear {name}, not both.")
            raise typer.Exit(2)
        changes[column] = None
    with _client() as app:
        library = app.library
        with library.database.write_transaction():
            book = _resolve(library, book_id)
            if series is not None:
                changes["series_id"] = _series(library, series)
            book = library.update(book.id, **changes)
        console.print(f"Updated [bold]{escape(book.title or '')}[/bold].")
        _saved_note(app)


@books_app.command("rm")
def books_rm(book_id: Annotated[str, typer.Argument(help="Id or id prefix.")]) -> None:
    """Delete a book."""
    with _client() as app:
        book = _resolve(app.library, book_id)
        app.library.delete(book.id)
        console.print(f"Deleted [bold]{book.title}[/bold].")
        _saved_note(app)


@books_app.command("watch")
def books_watch(
    sync: Annotated[bool, typer.Option(help="Also sync while watching.")] = True,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many updates (for scripts).")
    ] = None,
) -> None:
    """Print the library again whenever it changes (Ctrl-C to stop). If another process signs
    the account out on this device (or in as another account), this one stops syncing it and
    goes on with the guest library."""
    with _client(verify=sync) as app:
        if sync and app.state is AuthState.SIGNED_IN:
            app.powersync.connect()
            owner = app.database.sync_owner_pid
            if owner is not None:
                err_console.print(
                    f"[dim]Another process (pid {owner}) is syncing this database; "
                    "showing its changes.[/dim]"
                )
        elif not sync:
            _not_synced_note(app)
        shown = 0
        try:
            while True:
                account = app.state is AuthState.SIGNED_IN
                with app.library.watch() as watch:
                    stop = app.on_signed_out_elsewhere(lambda _notice: watch.close())
                    try:
                        if account and app.state is not AuthState.SIGNED_IN:
                            watch.close()  # it happened before the listener was in place
                        for books in watch:
                            stamp = datetime.now().strftime("%H:%M:%S")
                            console.print(f"[dim]{stamp}[/dim]", _books_table(books))
                            shown += 1
                            if count is not None and shown >= count:
                                return
                    finally:
                        stop()
                notice = app.signed_out_elsewhere
                if not account or notice is None:
                    return
                console.print(
                    f"[yellow]{escape(notice.describe())}[/yellow] Showing the guest library.",
                    soft_wrap=True,
                )
        except KeyboardInterrupt:
            pass


# -- sync -----------------------------------------------------------------------------------


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    return f"{moment.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({seconds}s ago)"


def _status_rows(table: Table, db: PowerSyncDatabase) -> None:
    s = db.status
    table.add_row("Connected", "yes" if s.connected else "no")
    if db.sync_owner_pid is not None:
        table.add_row("Synced by", f"process {db.sync_owner_pid}")
    table.add_row("Last synced", _ago(s.last_synced_at))
    table.add_row("Upload queue", str(db.upload_queue_size()))
    if s.download_progress and s.downloading:
        p = s.download_progress
        table.add_row("Downloading", f"{p.downloaded}/{p.total}")
    if s.last_error:
        table.add_row("Last error", s.last_error)


def _signed_in(app: AuthProvider) -> None:
    if app.state is AuthState.OFFLINE:
        raise PapyrusClientError("offline mode is on")
    if app.state is not AuthState.SIGNED_IN:
        pending = app.pending_changes()
        owner = (app.powersync.owner() or {}).get("email") if pending else None
        raise PapyrusClientError(
            f"not signed in; {pending} change(s) of {owner or 'the last account'} are kept on "
            "this device: sign in as that account to upload them"
            if pending
            else "not signed in"
        )


@sync_app.command("status")
def sync_status() -> None:
    """The local sync state (no network)."""
    with _client() as app:
        _signed_in(app)
        table = Table(show_header=False, box=None)
        _status_rows(table, app.database)
        console.print(table)


@sync_app.command("now")
def sync_now(
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 120,
) -> None:
    """Upload queued changes and download everything new, with a progress bar; returns once
    the server has confirmed the last upload (exit code 1 if it could not)."""
    with _client(verify=True) as app:
        _signed_in(app)
        # Connected here (not inside sync_now) so another process's sync is known up front.
        app.powersync.connect()
        try:
            owner = app.database.sync_owner_pid
            if owner is not None:
                console.print(f"Another process (pid {owner}) is syncing this database.")
            with _progress() as show:
                result = app.sync_now(timeout, on_status=show)
        finally:
            app.powersync.disconnect()
        refused = [r for r in result.rejections if not r.dropped]
        dropped = [r for r in result.rejections if r.dropped]
        for shown, intro in (
            (refused, "change(s) refused by the server (its version of those rows was kept)"),
            (dropped, "change(s) were dropped: their row (or its book) was deleted meanwhile"),
        ):
            if shown:
                table = Table("Op", "Table", "Row", "Code", "Message")
                for r in shown:
                    table.add_row(
                        r.op or "", r.row_type or "", r.row_id or "", r.code or "", r.message or ""
                    )
                console.print(f"{len(shown)} {intro}:")
                console.print(table)
        if not result.synced:
            err_console.print(f"[red]Sync did not finish:[/red] {result.error}")
            raise typer.Exit(1)
        console.print(f"Synced. {BookRepository(app.database).count()} book(s) on this device.")


@contextmanager
def _progress() -> Iterator[Callable[[SyncStatus], None]]:
    """A progress bar fed by sync status changes (from the sync thread)."""
    columns = [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn()]
    with Progress(
        *columns, console=console, transient=True, disable=not sys.stdout.isatty()
    ) as bar:
        task = bar.add_task("Connecting", total=None)

        def show(s: SyncStatus) -> None:
            if s.last_error:
                bar.update(task, description=f"Retrying ({s.last_error})")
            elif s.download_progress and s.downloading:
                p = s.download_progress
                bar.update(task, description="Downloading", total=p.total, completed=p.downloaded)
            elif s.upload_queue_size:
                bar.update(task, description=f"Uploading {s.upload_queue_size} change(s)")
            elif s.connected:
                bar.update(task, description="Waiting for the server to confirm")

        yield show


@sync_app.command("rejections")
def sync_rejections(
    server: Annotated[bool, typer.Option(help="Ask the server instead of this device.")] = False,
) -> None:
    """Changes the server refused; the server's version of those rows was kept."""
    with _client(verify=server) as app:
        _signed_in(app)
        table = Table("When", "Op", "Row", "Code", "Message")
        if server:
            for r in app.auth.server_rejections():
                table.add_row(
                    str(r.get("created_at", r.get("rejected_at", ""))),
                    str(r.get("op", "")),
                    str(r.get("row_id", r.get("id", ""))),
                    str(r.get("code", "")),
                    str(r.get("message", "")),
                )
        else:
            for rec in app.data_store.rejections():
                table.add_row(
                    rec.rejected_at or "",
                    rec.op or "",
                    rec.row_id or "",
                    rec.code or "",
                    rec.message or "",
                )
        if not table.rows:
            console.print("No rejected changes.")
            return
        console.print(table)


# -- passwords, the address, the account ----------------------------------------------------

LinkArg = Annotated[
    str, typer.Argument(help="The link from the mail (quote it), or just its token.")
]


def _link_token(link: str) -> str:
    """The token of a mailed link (in its fragment, or a query for links rewritten by a mail
    client), or `link` itself when it is a bare token."""
    parts = urlsplit(link.strip())
    for part in (parts.fragment, parts.query):
        token = parse_qs(part).get("token")
        if token:
            return token[0]
    return link.strip()


@password_app.command("forgot")
def password_forgot(email: EmailOpt) -> None:
    """Mail a single-use link (30 minutes) to reset the password of the account with EMAIL."""
    with _client() as app:
        console.print(app.forgot_password(email))
        console.print("Open the link in a browser, or run `papyrus password reset '<link>'`.")


@password_app.command("reset")
def password_reset(
    link: LinkArg, password_stdin: PasswordStdinOpt = False, discard_pending: DiscardOpt = False
) -> None:
    """Choose a new password with a reset link: every device is signed out, this one signs in.
    The new password is asked for (hidden), or read from PAPYRUS_PASSWORD or standard input."""
    with _client() as app, _unless_pending(app, "password reset"):
        password = _password(password_stdin, confirm=True, prompt="New password")
        user = app.reset_password(_link_token(link), password, discard_pending=discard_pending)
        console.print(
            "Password changed; every other device was signed out. "
            f"Signed in as [bold]{escape(user.email)}[/bold]."
        )


@password_app.command("change")
def password_change(password_stdin: PasswordStdinOpt = False) -> None:
    """Change the password: this device stays signed in, every other one is signed out. Asks
    for the current and the new password (hidden), or reads PAPYRUS_PASSWORD and
    PAPYRUS_NEW_PASSWORD, or with --password-stdin the first two lines of standard input."""
    with _client(verify=True) as app:
        _signed_in(app)
        current = _password(password_stdin, prompt="Current password")
        new = _password(
            password_stdin, confirm=True, prompt="New password", env="PAPYRUS_NEW_PASSWORD"
        )
        revoked = app.change_password(current, new)
        console.print(
            f"Password changed. {revoked} other device(s) signed out; this one stays signed in."
        )


@email_app.command("verify")
def email_verify(link: LinkArg) -> None:
    """Confirm the account's address with the link mailed to it."""
    with _client() as app:
        result = app.verify_email(_link_token(link))
        console.print(f"Confirmed: {escape(str(result['email']))}.")


@email_app.command("resend")
def email_resend() -> None:
    """Mail a new confirmation link to the signed-in account's address."""
    with _client(verify=True) as app:
        _signed_in(app)
        console.print(app.resend_verification())


@email_app.command("change")
def email_change(
    new_email: Annotated[str, typer.Option(prompt="New email", help="The new address.")],
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Change the account's address: a link goes to the new one, and the change happens when
    it is opened (`papyrus email confirm`). Asks for the password; an account without one
    (Google only) needs a Google sign-in within the last few minutes instead."""
    with _client(verify=True) as app:
        _signed_in(app)
        password = _password(password_stdin) if app.user and app.user.has_password else None
        console.print(app.change_email(new_email, password))


@email_app.command("confirm")
def email_confirm(link: LinkArg) -> None:
    """Make the new address the account's, with the link mailed to it."""
    with _client() as app:
        result = app.confirm_email_change(_link_token(link))
        console.print(f"The account now uses {escape(str(result['email']))}.")


@account_app.command("delete")
def account_delete(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Delete the account and everything in it, on every device, for good. Asks for
    confirmation and the password (hidden, PAPYRUS_PASSWORD or --password-stdin); an account
    without a password (Google only) needs a Google sign-in within the last few minutes."""
    with _client(verify=True) as app:
        _signed_in(app)
        assert app.user is not None
        email = app.user.email
        err_console.print(
            f"This deletes the account [bold]{escape(email)}[/bold] and everything in it: "
            "every book and note, on every device. It cannot be undone.",
            soft_wrap=True,
        )
        pending = app.pending_changes()
        if pending:
            err_console.print(
                f"{pending} change(s) made on this device have not been uploaded; they are "
                "deleted too.",
                soft_wrap=True,
            )
        if not yes and not typer.confirm("Delete the account?", default=False, err=True):
            err_console.print("Nothing was deleted.")
            raise typer.Exit(1)
        password = _password(password_stdin) if app.user.has_password else None
        app.delete_account(password)
        console.print(f"The account {escape(email)} was deleted.")


@account_app.command("export")
def account_export(
    file: Annotated[Path, typer.Argument(help="Where to write the JSON document.")],
) -> None:
    """Download everything the server holds about the account (profile, sessions, every synced
    row) as one JSON document, readable by you only."""
    with _client(verify=True) as app:
        _signed_in(app)
        size = app.export_account(file)
        console.print(f"Exported the account's data to {escape(str(file))} ({size:,} bytes).")
