"""Several processes on one device: real `papyrus` processes sharing one client directory,
against the whole stack (the API and the development sync service)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from papyrus.cli.main import app
from papyrus.client._interprocess import StatusFile
from tests.client.conftest import eventually
from tests.client.processes import Papyrus, Refresher, papyrus
from tests.client.stack import Stack

PASSWORD = "correct horse battery"


@pytest.fixture
def env(stack: Stack, tmp_path: Path) -> Iterator[dict[str, str]]:
    values = {
        "PAPYRUS_CLIENT_DIR": str(tmp_path / "device"),
        "PAPYRUS_TOKEN_STORE": "file",
        "PAPYRUS_API_URL": stack.api_url,
        "POWERSYNC_SERVICE_URL": stack.sync_url,
        "COLUMNS": "200",
    }
    result = CliRunner().invoke(
        app,
        ["register", "--email", "ada@example.com", "--name", "Ada"],
        env=values,
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    yield values


@pytest.fixture
def streams(stack: Stack) -> list[dict[str, Any]]:
    """The body of every sync stream the development sync service opens from now on."""
    assert stack.sync is not None
    service = stack.sync.service
    opened: list[dict[str, Any]] = []
    session = service.session

    def counting(token: Any, body: dict[str, Any]) -> Any:
        opened.append(body)
        return session(token, body)

    service.session = counting  # type: ignore[method-assign]
    return opened


def owner_status(env: dict[str, str]) -> tuple[int, Any] | None:
    return StatusFile(str(Path(env["PAPYRUS_CLIENT_DIR"]) / "papyrus-account.db")).read()


def synced_by(env: dict[str, str], pid: int) -> bool:
    published = owner_status(env)
    return published is not None and published[0] == pid and published[1].has_synced


def test_a_watching_process_sees_and_uploads_another_process_writes(
    stack: Stack, env: dict[str, str], streams: list[dict[str, Any]]
) -> None:
    watcher = Papyrus(env, "books", "watch")
    try:
        eventually(lambda: "Title" in watcher.stdout, timeout=60)
        eventually(lambda: synced_by(env, watcher.pid) and len(streams) == 1, timeout=60)

        out = papyrus(env, "books", "add", "Written elsewhere")
        assert f"process {watcher.pid} is syncing them" in out
        eventually(lambda: "Written elsewhere" in watcher.stdout, 30)  # the watch saw it
        eventually(lambda: stack.sql("SELECT title FROM books") == [("Written elsewhere",)], 30)

        papyrus(env, "books", "add", "Then synced")
        out = papyrus(env, "sync", "now", "--timeout", "60")
        assert f"Another process (pid {watcher.pid}) is syncing" in out and "Synced." in out
        # `sync now` returned after the owner uploaded the write and applied it back.
        assert ("Then synced",) in stack.sql("SELECT title FROM books")
        assert "Synced by" in papyrus(env, "sync", "status")
        assert len(streams) == 1  # the other processes never opened a stream of their own
        published = owner_status(env)
        assert published is not None and published[1].last_error is None
    finally:
        assert watcher.interrupt() == 0, watcher.stderr
    assert "checksum" not in watcher.stderr.lower() and "Traceback" not in watcher.stderr


def test_two_syncing_processes_run_one_sync_loop_and_the_second_takes_over(
    stack: Stack, env: dict[str, str], streams: list[dict[str, Any]]
) -> None:
    first = Papyrus(env, "books", "watch")
    second: Papyrus | None = None
    try:
        eventually(lambda: synced_by(env, first.pid), timeout=60)
        second = Papyrus(env, "books", "watch")
        eventually(lambda: f"Another process (pid {first.pid})" in second.stderr, timeout=60)
        assert len(streams) == 1

        papyrus(env, "books", "add", "Seen by both")
        eventually(lambda: "Seen by both" in first.stdout and "Seen by both" in second.stdout, 30)
        eventually(lambda: stack.sql("SELECT title FROM books") == [("Seen by both",)], 30)
        assert len(streams) == 1

        assert first.interrupt() == 0, first.stderr
        eventually(lambda: synced_by(env, second.pid) and len(streams) == 2, timeout=30)
        papyrus(env, "books", "add", "After the take-over")
        eventually(lambda: ("After the take-over",) in stack.sql("SELECT title FROM books"), 30)
        eventually(lambda: "After the take-over" in second.stdout, 30)
        published = owner_status(env)
        assert published is not None and published[1].last_error is None
    finally:
        first.interrupt()
        if second is not None:
            assert second.interrupt() == 0, second.stderr
    for proc in (first, second):
        assert "checksum" not in proc.stderr.lower() and "Traceback" not in proc.stderr


# -- clearing the account database while another process syncs it ----------------------------


def account_files(env: dict[str, str]) -> list[Path]:
    path = Path(env["PAPYRUS_CLIENT_DIR"]) / "papyrus-account.db"
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))]


def readable(env: dict[str, str], *texts: str) -> list[str]:
    """Which of `texts` can be read back from the account database's files."""
    raw = b"".join(f.read_bytes() for f in account_files(env) if f.exists())
    return [t for t in texts if t.encode() in raw]


def after_sign_out(watcher: Papyrus) -> str:
    """What the watcher printed once it said it shows the guest library."""
    return watcher.stdout.split(GUEST_NOTE, 1)[1]


def device_of_ada(stack: Stack, name: str) -> Any:
    device = stack.client(name)
    device.sign_in("ada@example.com", PASSWORD)
    return device


GUEST_NOTE = "Showing the guest library"


def test_logout_beside_a_syncing_watch_stops_it_and_leaves_nothing_behind(
    stack: Stack, env: dict[str, str]
) -> None:
    first, author, later = "Quokka Lantern Almanac", "Vexla Thornquist", "Marmoset Ferry Ledger"
    papyrus(env, "books", "add", first, "--author", author)
    watcher = Papyrus(env, "books", "watch")
    try:
        eventually(lambda: synced_by(env, watcher.pid) and first in watcher.stdout, timeout=60)
        eventually(lambda: stack.sql("SELECT title FROM books") == [(first,)], 30)
        assert readable(env, first, author)  # the probe works

        out = papyrus(env, "logout")
        assert "Signed out. The account's data was removed from this device." in out
        # The watching process stopped syncing, says why, and shows the guest library.
        eventually(lambda: GUEST_NOTE in watcher.stdout, 30)
        assert "ada@example.com" in watcher.stdout and "signing out" in watcher.stdout
        published = owner_status(env)
        assert published is None or published[0] != watcher.pid
        assert watcher.proc.poll() is None  # still running

        # Another device of the account adds a book; it reaches every live sync stream.
        phone, tablet = device_of_ada(stack, "phone"), device_of_ada(stack, "tablet")
        phone.library.add(later, author=author)
        assert phone.sync_now(timeout=60).synced
        eventually(lambda: later in [b.title for b in tablet.library.list()], 30)

        assert readable(env, first, author, later, "ada@example.com") == []
        assert first not in after_sign_out(watcher) and later not in after_sign_out(watcher)
        assert "Not signed in" in papyrus(env, "logout")
    finally:
        assert watcher.interrupt() == 0, watcher.stderr
    assert readable(env, first, author, later, "ada@example.com") == []
    assert "checksum" not in watcher.stderr.lower() and "Traceback" not in watcher.stderr


def test_an_account_switch_beside_a_syncing_watch_shows_none_of_the_old_account(
    stack: Stack, env: dict[str, str]
) -> None:
    ada_title, bob_title, later = "Heron Quarry Psalter", "Bob Owns This One", "Pelican Tide Atlas"
    bob = stack.client("bob-phone")
    bob.register("bob@example.com", PASSWORD, "Bob")
    bob.library.add(bob_title)
    assert bob.sync_now(timeout=60).synced
    papyrus(env, "books", "add", ada_title)
    watcher = Papyrus(env, "books", "watch")
    try:
        eventually(lambda: synced_by(env, watcher.pid) and ada_title in watcher.stdout, 60)
        eventually(lambda: (ada_title,) in stack.sql("SELECT title FROM books"), 30)

        out = papyrus({**env, "PAPYRUS_PASSWORD": PASSWORD}, "login", "--email", "bob@example.com")
        assert "Signed in as bob@example.com" in out
        eventually(lambda: GUEST_NOTE in watcher.stdout, 30)
        assert ada_title not in papyrus(env, "books", "list")
        status = papyrus(env, "status")
        assert "bob@example.com" in status and f"process {watcher.pid}" not in status

        phone, tablet = device_of_ada(stack, "phone"), device_of_ada(stack, "tablet")
        phone.library.add(later)
        assert phone.sync_now(timeout=60).synced
        eventually(lambda: later in [b.title for b in tablet.library.list()], 30)
        listing = papyrus(env, "books", "list")
        assert ada_title not in listing and later not in listing

        assert "Synced." in papyrus(env, "sync", "now", "--timeout", "60")
        listing = papyrus(env, "books", "list")
        assert bob_title in listing and ada_title not in listing and later not in listing
        assert ada_title not in after_sign_out(watcher) and later not in after_sign_out(watcher)
        assert readable(env, ada_title, later) == []
    finally:
        assert watcher.interrupt() == 0, watcher.stderr
    assert "checksum" not in watcher.stderr.lower() and "Traceback" not in watcher.stderr


# -- one stored refresh token, several processes refreshing it --------------------------------


def test_processes_refreshing_at_once_never_present_one_refresh_token_twice(
    stack: Stack, env: dict[str, str]
) -> None:
    """The server revokes a session whose refresh token is presented twice; two processes
    that refresh the one stored token at the same instant must take turns."""
    workers = [Refresher(env, rounds=50) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    for worker in workers:
        worker.go()
    results = [worker.finish() for worker in workers]
    assert stack.sql("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NOT NULL") == [(0,)], (
        results
    )
    for code, out, err in results:
        assert code == 0 and "refreshed 50 times as ada@example.com" in out, (out, err)
    assert "Synced." in papyrus(env, "sync", "now", "--timeout", "60")  # refreshes once more
