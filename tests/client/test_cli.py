"""The client commands of `papyrus`, as a user runs them (Typer's CliRunner)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from papyrus.cli.main import app
from papyrus.client import GUEST_SCHEMA, AuthProvider, PapyrusApiConfig, PowerSyncDatabase
from papyrus.server.app import create_app
from tests.client.conftest import eventually
from tests.client.stack import Stack
from tests.conftest import LiveServer, make_settings

PASSWORD = "correct horse battery"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "PAPYRUS_CLIENT_DIR": str(tmp_path / "cli"),
        "PAPYRUS_TOKEN_STORE": "file",
        "PAPYRUS_API_URL": "http://127.0.0.1:9",  # nothing listens: local commands only
        "POWERSYNC_SERVICE_URL": "http://127.0.0.1:9",
        "COLUMNS": "200",
    }


def run(
    env: dict[str, str],
    *args: str,
    input: str | None = None,
    code: int = 0,
    env_extra: dict[str, str] | None = None,
) -> str:
    result = CliRunner().invoke(app, list(args), env={**env, **(env_extra or {})}, input=input)
    assert result.exit_code == code, result.output
    return result.output


def write_past_the_checks(env: dict[str, str], book_ref: str, **changes: Any) -> None:
    """Writes to the command line's live library a change the server refuses, as an app that
    leaves the judging to the server would (`validate_writes=False`)."""
    config = PapyrusApiConfig.from_environment(env)
    with AuthProvider(config, auto_connect=False, validate_writes=False) as app:
        app.bootstrap(verify=False)
        app.library.update(app.library.resolve(book_ref).id, **changes)


def test_client_package_never_imports_server_code() -> None:
    script = (
        "import sys, papyrus.client, papyrus.client.cli;"
        "bad = [m for m in sys.modules if m.startswith(('papyrus.server', 'papyrus.devsync'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_guest_library_from_the_command_line(env: dict[str, str]) -> None:
    assert "No books." in run(env, "books", "list")
    out = run(env, "books", "add", "Dune", "--author", "Frank Herbert", "--rating", "5")
    assert "Added Dune" in out
    run(env, "books", "add", "Emma", "--author", "Jane Austen", "--favorite")
    listing = run(env, "books", "list")
    assert listing.index("Dune") < listing.index("Emma") and "Frank Herbert" in listing
    assert "Emma" in run(env, "books", "list", "--favorite")
    assert "Dune" not in run(env, "books", "list", "--favorite")
    by_author = run(env, "books", "list", "--sort", "author", "--desc")
    assert by_author.index("Austen") < by_author.index("Herbert")  # Jane before Frank
    assert "rating" in run(env, "books", "add", "Bad", "--rating", "9", code=2).lower()
    assert "status" in run(env, "books", "add", "Bad", "--status", "skimming", code=2).lower()
    assert "Bad" not in run(env, "books", "list")
    book_id = next(line.split()[1] for line in listing.splitlines() if "Dune" in line)
    run(env, "books", "edit", book_id, "--status", "reading", "--current-page", "42")
    shown = run(env, "books", "show", book_id)
    assert "reading" in shown and "42" in shown
    run(env, "books", "rm", book_id)
    assert "Dune" not in run(env, "books", "list")
    assert "no book" in run(env, "books", "show", "zzzz", code=1)
    status = run(env, "status")
    assert "signed_out" in status and "papyrus-guest.db" in status


def test_offline_mode_from_the_command_line(env: dict[str, str]) -> None:
    assert "Offline mode is on" in run(env, "offline", "on")
    assert "offline" in run(env, "status")
    assert "offline mode is on" in run(
        {**env, "PAPYRUS_PASSWORD": "x"}, "login", "--email", "a@example.com", code=1
    )
    assert "Offline mode is off" in run(env, "offline", "off")
    run(env, "offline", "maybe", code=2)


def test_unreachable_server_is_a_clear_error(env: dict[str, str]) -> None:
    out = run(
        env, "login", "--email", "a@example.com", "--password-stdin", input="whatever1\n", code=1
    )
    assert "cannot reach the Papyrus API" in out


def test_sign_in_write_sync_and_rejections_against_the_stack(
    stack: Stack, env: dict[str, str]
) -> None:
    env = {**env, "PAPYRUS_API_URL": stack.api_url, "POWERSYNC_SERVICE_URL": stack.sync_url}
    out = run(
        env,
        "register",
        "--email",
        "ada@example.com",
        "--name",
        "Ada",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert "Signed in as ada@example.com" in out
    out = run(env, "books", "add", "Dune", "--rating", "4")
    assert "1 change(s) waiting to upload" in out
    assert "Synced." in run(env, "sync", "now", "--timeout", "30")
    assert stack.sql("SELECT title, rating FROM books") == [("Dune", 4)]
    assert re.search(r"Upload queue\s+0\s*$", run(env, "sync", "status"), re.M)
    book_id = next(
        line.split()[1] for line in run(env, "books", "list").splitlines() if "Dune" in line
    )
    refused = run(env, "books", "edit", book_id, "--title", "x" * 501, code=1)
    assert "title: must be a string of 1 to 500 characters." in refused  # refused locally
    write_past_the_checks(env, book_id, title="x" * 501)  # the server allows 500
    run(env, "sync", "now", "--timeout", "30")
    assert re.search(r"^\s*title\s+Dune\s*$", run(env, "books", "show", book_id), re.M)
    local = run(env, "sync", "rejections")
    assert "PATCH" in local and book_id[:8] in local
    assert "Dune" in run(env, "books", "list")

    phone = stack.client("phone")
    phone.sign_in("ada@example.com", PASSWORD)
    phone.library.add("From the phone")
    eventually(lambda: phone.database.status.upload_queue_size == 0)
    assert "2 book(s)" in run(env, "sync", "now", "--timeout", "30")
    assert "From the phone" in run(env, "books", "list")

    assert "Signed out" in run(env, "logout")
    assert "No books." in run(env, "books", "list")
    assert "signed_out" in run(env, "status")


def stack_env(stack: Stack, env: dict[str, str]) -> dict[str, str]:
    return {**env, "PAPYRUS_API_URL": stack.api_url, "POWERSYNC_SERVICE_URL": stack.sync_url}


def cli_register(env: dict[str, str], email: str) -> None:
    secret = f"{PASSWORD}\n{PASSWORD}\n"
    run(env, "register", "--email", email, "--name", "Reader", input=secret)


def test_account_commands_refuse_while_changes_wait(stack: Stack, env: dict[str, str]) -> None:
    env = stack_env(stack, env)
    stack.client("phone").register("bob@example.com", PASSWORD, "Bob")
    cli_register(env, "ada@example.com")
    run(env, "books", "add", "Unsent one")
    run(env, "books", "add", "Unsent two")

    for command in (["logout"], ["offline", "on"]):
        out = run(env, *command, code=1)
        assert "2 change(s)" in out and "papyrus sync now" in out
        assert f"papyrus {' '.join(command)} --discard-pending" in out
    out = run(env, "login", "--email", "bob@example.com", input=f"{PASSWORD}\n", code=1)
    assert "2 change(s) of ada@example.com" in out and "papyrus login --discard-pending" in out
    secret = f"{PASSWORD}\n{PASSWORD}\n"
    out = run(env, "register", "--email", "carol@example.com", "--name", "C", input=secret, code=1)
    assert "2 change(s)" in out
    status = run(env, "status")
    assert "signed_in" in status and "ada@example.com" in status
    assert "Unsent one" in run(env, "books", "list")

    out = run(env, "login", "--email", "ada@example.com", input="wrong password\n", code=1)
    assert "incorrect" in out
    assert re.search(r"Upload queue\s+2\s*$", run(env, "sync", "status"), re.M)

    out = run(env, "offline", "on", "--discard-pending")
    assert "Offline mode is on" in out
    assert stack.sql("SELECT count(*) FROM books") == [(0,)]
    run(env, "offline", "off")
    run(env, "login", "--email", "ada@example.com", input=f"{PASSWORD}\n")
    run(env, "books", "add", "Sent")
    assert "Synced." in run(env, "sync", "now")
    assert "Signed out" in run(env, "logout")  # nothing waits now
    assert stack.sql("SELECT title FROM books") == [("Sent",)]


def test_sync_now_reports_rejections_and_down_services(stack: Stack, env: dict[str, str]) -> None:
    env = stack_env(stack, env)
    cli_register(env, "ada@example.com")
    run(env, "books", "add", "Dune", "--rating", "4")
    assert "Synced." in run(env, "sync", "now")
    book_id = next(
        line.split()[1] for line in run(env, "books", "list").splitlines() if "Dune" in line
    )
    write_past_the_checks(env, book_id, title="x" * 501)  # the server allows 500
    out = run(env, "sync", "now")  # the default timeout: it must not be waited out
    assert "1 change(s) refused by the server" in out and "PATCH" in out and "Synced." in out

    run(env, "books", "add", "Waits")
    stack.stop_sync()
    out = run(env, "sync", "now", code=1)
    assert "cannot reach the sync service" in out and "not finished" not in out
    out = run(env, "sync", "now", code=1, env_extra={"PAPYRUS_API_URL": "http://127.0.0.1:9"})
    assert "cannot reach the Papyrus API" in out and "not finished" not in out
    out = run(
        env, "logout", "--discard-pending", env_extra={"PAPYRUS_API_URL": "http://127.0.0.1:9"}
    )
    assert "Signed out" in out and "server session could not be ended" in out
    assert "signed_out" in run(env, "status")


def test_a_revoked_session_keeps_unsent_changes_for_the_next_sign_in(
    stack: Stack, env: dict[str, str]
) -> None:
    env = stack_env(stack, env)
    cli_register(env, "ada@example.com")
    run(env, "books", "add", "Written before the revocation")
    other = stack.client("other")
    other.sign_in("ada@example.com", PASSWORD)
    other.sign_out(all_devices=True)

    out = run(env, "sync", "now", code=1)  # the refresh is refused: signed out, data kept
    assert "not signed in; 1 change(s) of ada@example.com are kept" in out
    status = run(env, "status")
    assert "signed_out" in status and "1 change(s) waiting to upload" in status
    run(env, "login", "--email", "ada@example.com", input=f"{PASSWORD}\n")
    assert "Synced." in run(env, "sync", "now")
    assert stack.sql("SELECT title FROM books") == [("Written before the revocation",)]


# -- passwords, errors, paging, clearing fields, a new device, Google sign-in ------------------


def test_passwords_are_never_taken_from_the_command_line(env: dict[str, str]) -> None:
    for command in ("login", "register"):
        helptext = run(env, command, "--help")
        assert "--password-stdin" in helptext
        assert not re.search(r"--password(?!-stdin)", helptext)
    run(env, "login", "--email", "a@example.com", "--password", "secret", code=2)
    unreachable = "cannot reach the Papyrus API"
    # From a hidden prompt: asked for, and what is typed is not shown.
    out = run(env, "login", "--email", "a@example.com", input="typed-secret\n", code=1)
    assert "Password:" in out and "typed-secret" not in out and unreachable in out
    # From standard input or the environment, for scripts: no prompt at all.
    out = run(
        env, "login", "--email", "a@example.com", "--password-stdin", input="s3cret\n", code=1
    )
    assert "Password:" not in out and unreachable in out
    out = run({**env, "PAPYRUS_PASSWORD": "s3cret"}, "login", "--email", "a@example.com", code=1)
    assert "Password:" not in out and unreachable in out
    out = run(env, "login", "--email", "a@example.com", "--password-stdin", input="", code=1)
    assert "no password" in out


def papyrus_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One `papyrus` command in its own process, as a user's shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "papyrus.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_configuration_mistakes_are_one_line_not_a_traceback(
    env: dict[str, str], tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "papyrus-guest.db").write_bytes(b"this is not an SQLite database" * 100)
    mistakes = [
        ({"PAPYRUS_TOKEN_STORE": "pigeon"}, "PAPYRUS_TOKEN_STORE must be one of"),
        (
            {
                "PAPYRUS_TOKEN_STORE": "keyring",
                "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            },
            "no usable keyring",
        ),
        ({"PAPYRUS_CLIENT_DIR": str(a_file / "papyrus")}, "Not a directory"),
        ({"PAPYRUS_CLIENT_DIR": str(damaged)}, "not a database"),
        ({"PAPYRUS_API_URL": "localhost:8080"}, "PAPYRUS_API_URL must be an http:// or https://"),
        ({"POWERSYNC_SERVICE_URL": "http://localhost:99999"}, "POWERSYNC_SERVICE_URL must be"),
    ]
    for mistake, message in mistakes:
        done = papyrus_process({**env, **mistake}, "books", "list")
        assert done.returncode == 1, (mistake, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert message in done.stderr, (mistake, done.stderr)


def test_book_list_pages_through_a_large_library(env: dict[str, str]) -> None:
    run(env, "books", "list")  # creates the guest library
    with PowerSyncDatabase(
        Path(env["PAPYRUS_CLIENT_DIR"]) / "papyrus-guest.db", GUEST_SCHEMA
    ) as db:
        db.execute_batch(
            "INSERT INTO books (id, title) VALUES (uuid(), ?)",
            [(f"Book {i:03}",) for i in range(120)],
        )
    first = run(env, "books", "list")
    assert "1-50 of 120 book(s); --offset 50 for more" in first
    assert "Book 049" in first and "Book 050" not in first
    page = run(env, "books", "list", "--offset", "50", "--limit", "10")
    assert "51-60 of 120 book(s); --offset 60 for more" in page
    assert "Book 050" in page and "Book 059" in page and "Book 060" not in page
    last = run(env, "books", "list", "--offset", "115")
    assert "116-120 of 120 book(s)" in last and "for more" not in last
    assert "Book 119" in last
    assert "of 120" not in run(env, "books", "list", "--search", "Book 07", "--limit", "5")
    assert "1-5 of 10 book(s)" in run(env, "books", "list", "--search", "Book 07", "--limit", "5")


def test_edit_can_clear_a_field(env: dict[str, str]) -> None:
    run(env, "books", "add", "Dune", "--rating", "4", "--author", "Frank Herbert")
    book_id = next(
        line.split()[1] for line in run(env, "books", "list").splitlines() if "Dune" in line
    )
    assert re.search(r"^[ \t]*rating[ \t]+4", run(env, "books", "show", book_id), re.M)
    run(env, "books", "edit", book_id, "--clear", "rating", "--clear", "author")
    shown = run(env, "books", "show", book_id)
    assert not re.search(r"^[ \t]*rating[ \t]+\S", shown, re.M)
    assert not re.search(r"^[ \t]*author[ \t]+\S", shown, re.M)
    assert "both" in run(
        env, "books", "edit", book_id, "--rating", "3", "--clear", "rating", code=2
    )
    assert "clearable" in run(env, "books", "edit", book_id, "--clear", "title", code=2)


def test_server_details_a_new_device_and_clearing_against_the_stack(
    stack: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "PAPYRUS_API_URL": stack.api_url, "POWERSYNC_SERVICE_URL": stack.sync_url}
    args = ("register", "--email", "ada@example.com", "--name", "Ada")
    out = run(env, *args, input="short\nshort\n", code=1)
    assert "password: String should have at least 8 characters" in out  # the field and why
    bad_email = ("register", "--email", "nope", "--name", "Ada")
    out = run({**env, "PAPYRUS_PASSWORD": PASSWORD}, *bad_email, code=1)
    assert "email: value is not a valid email address" in out
    run({**env, "PAPYRUS_PASSWORD": PASSWORD}, *args)

    phone = stack.client("phone")
    phone.sign_in("ada@example.com", PASSWORD)
    phone.library.add("From the phone", rating=3)
    eventually(lambda: phone.database.status.upload_queue_size == 0)
    eventually(lambda: stack.sql("SELECT title FROM books") == [("From the phone",)])

    laptop = {**env, "PAPYRUS_CLIENT_DIR": str(tmp_path / "laptop")}
    login = ("login", "--email", "ada@example.com", "--password-stdin")
    assert "Signed in" in run(laptop, *login, input=f"{PASSWORD}\n")
    fresh = run(laptop, "books", "list")
    assert "No books." in fresh and "run `papyrus sync now`" in fresh
    assert "run `papyrus sync now`" in run(laptop, "status")
    run(laptop, "sync", "now", "--timeout", "30")
    listing = run(laptop, "books", "list")
    assert "From the phone" in listing and "sync now" not in listing

    book_id = next(line.split()[1] for line in listing.splitlines() if "From the phone" in line)
    run(laptop, "books", "edit", book_id, "--clear", "rating")
    run(laptop, "sync", "now", "--timeout", "30")
    assert stack.sql("SELECT title, rating FROM books") == [("From the phone", None)]

    # No Google sign-in on this server: the CLI says so at once instead of waiting.
    out = run(laptop, "login-google", "--no-browser", "--timeout", "20", code=1)
    assert "Google sign-in is not configured" in out and "Waiting" not in out


def test_a_rate_limited_sign_in_says_how_long_to_wait(
    env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url, RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL=2)
    with LiveServer(create_app(settings)) as api:
        env = {**env, "PAPYRUS_API_URL": api.url, "PAPYRUS_PASSWORD": "wrong password"}
        for _ in range(2):
            assert "incorrect" in run(env, "login", "--email", "ada@example.com", code=1)
        out = run(env, "login", "--email", "ada@example.com", code=1)
    assert "Too many failed sign-ins" in out
    wait = re.search(r"Retry in (\d+) (s|min)\.", out)
    assert wait is not None and int(wait.group(1)) > 0, out
