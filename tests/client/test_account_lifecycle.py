"""The account lifecycle from the Python client and the CLI, against the whole stack (API,
development sync service, PostgreSQL) with the API's mail going to a real SMTP catcher."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from papyrus.cli.main import app as cli
from papyrus.client import AccountDeletedError, AuthProvider, AuthState
from papyrus.devsync.storage import StorageWriter
from papyrus.server.config import Settings
from papyrus.server.mail.catcher import MailCatcher
from tests.client.conftest import eventually
from tests.client.stack import Stack
from tests.conftest import make_settings
from tests.mailbox import mail_to, mails_to, smtp_settings, token_of
from tests.server.lifecycle.account_data import rows_mentioning

PASSWORD = "correct horse battery"
NEW = "a brand new passphrase"


@pytest.fixture
def mailbox() -> Iterator[MailCatcher]:
    with MailCatcher() as catcher:
        yield catcher


@pytest.fixture
def settings(tmp_path: Path, database_url: str, mailbox: MailCatcher) -> Settings:
    """Overrides the root fixture: the stack's API sends mail to `mailbox`."""
    return make_settings(tmp_path, database_url, **smtp_settings(mailbox.port))


def titles(provider: AuthProvider) -> list[str]:
    return sorted(b.title or "" for b in provider.library.list())


def account_rows(provider: AuthProvider) -> int:
    return len(provider.powersync.database.get_all("SELECT id FROM books"))


def test_deleting_the_account_clears_every_device_and_says_what_was_lost(stack: Stack) -> None:
    """One device deletes the account while another syncs and a third is offline with a
    change it never uploaded. The syncing device sees the rows removed through sync, then is
    signed out; the offline one is told on its next start that its change was discarded."""
    laptop, phone = stack.client("laptop"), stack.client("phone")
    laptop.register("ada@example.com", PASSWORD, "Ada")
    phone.sign_in("ada@example.com", PASSWORD)
    tablet = stack.client("tablet", auto_connect=False)
    tablet.sign_in("ada@example.com", PASSWORD)
    tablet.library.add("Written offline, never uploaded")
    assert tablet.pending_changes() == 1
    tablet.close()

    laptop.library.add("Dune")
    laptop.library.add("Emma")
    eventually(lambda: titles(phone) == ["Dune", "Emma"], timeout=20)
    eventually(lambda: laptop.pending_changes() == 0)

    deletion = laptop.delete_account(PASSWORD)
    assert deletion.email == "ada@example.com" and deletion.discarded_changes == 0
    assert laptop.state is AuthState.SIGNED_OUT and laptop.account_deletion == deletion
    assert account_rows(laptop) == 0

    # The phone is still signed in, but the deletion reached it through sync as removals.
    eventually(lambda: titles(phone) == [], timeout=20)
    assert phone.state is AuthState.SIGNED_IN
    # Its next call to the API (here, uploading a new write) finds the account gone.
    phone.library.add("Too late")
    assert phone.wait_signed_out(20)
    assert phone.state is AuthState.SIGNED_OUT
    assert phone.account_deletion is not None
    assert phone.account_deletion.discarded_changes == 1
    assert account_rows(phone) == 0 and phone.pending_changes() == 0
    assert phone.powersync.owner() is None

    # The tablet, started again later: told, cleared, and its unsent change counted.
    tablet = stack.client("tablet")
    assert tablet.bootstrap() is AuthState.SIGNED_OUT
    assert tablet.account_deletion is not None
    assert tablet.account_deletion.discarded_changes == 1
    assert "1 change(s) made here had not been uploaded" in tablet.account_deletion.describe()
    assert account_rows(tablet) == 0 and tablet.pending_changes() == 0

    # Nothing of the account is left on the server's side of the stack.
    assert stack.sql("SELECT count(*) FROM users") == [(0,)]
    assert stack.sql("SELECT count(*) FROM books") == [(0,)]


def test_what_the_development_sync_service_keeps_of_a_deleted_account(stack: Stack) -> None:
    """As docs/account-lifecycle.md says: until its next compaction the dev service's operation
    log still holds the deleted rows whole (their PUTs, then the REMOVEs); compaction strips
    them to one CLEAR per bucket, whose name (like the write checkpoints' key) is the user id."""
    laptop = stack.client("laptop")
    laptop.register("ada@example.com", PASSWORD, "Ada")
    laptop.library.add("Dune")
    # Synced, not just uploaded: the write checkpoint the client asks for after its upload
    # (one of the things kept) exists before the account goes.
    assert laptop.sync_now(timeout=60).synced
    [(user_id,)] = stack.sql("SELECT id::text FROM users")
    assert stack.sql("SELECT 1 FROM powersync_dev.write_checkpoints WHERE user_id = %s", (user_id,))
    laptop.delete_account(PASSWORD)
    mine = f"%{user_id}%"

    def kept() -> dict[str, list[str]]:
        found = rows_mentioning(stack.sql, {user_id, "Dune"})
        return {table: rows for table, rows in found.items() if table.startswith("powersync_dev.")}

    eventually(
        lambda: stack.sql(
            "SELECT 1 FROM powersync_dev.ops WHERE op = 'REMOVE' AND bucket LIKE %s", (mine,)
        ),
        timeout=20,
    )
    before = kept()
    assert set(before) == {
        "powersync_dev.ops",
        "powersync_dev.buckets",
        "powersync_dev.write_checkpoints",
    }
    assert any("Dune" in row for row in before["powersync_dev.ops"])  # the row, whole

    writer = StorageWriter(stack.sync_settings.conninfo, stack.sync_settings.schema)
    try:
        writer.compact()
    finally:
        writer.close()
    after = kept()
    assert set(after) == set(before)
    assert not any("Dune" in row for rows in after.values() for row in rows)
    assert {
        op for (op,) in stack.sql("SELECT op FROM powersync_dev.ops WHERE bucket LIKE %s", (mine,))
    } == {"CLEAR"}


def test_a_device_without_proof_cannot_delete(stack: Stack) -> None:
    device = stack.client("device")
    device.register("ada@example.com", PASSWORD, "Ada")
    device.library.add("Kept")
    with pytest.raises(Exception) as refused:
        device.delete_account("not the password")
    assert getattr(refused.value, "code", None) == "invalid_password"
    assert device.state is AuthState.SIGNED_IN and titles(device) == ["Kept"]
    assert device.account_deletion is None


def test_reset_signs_this_device_in_and_the_others_out(stack: Stack, mailbox: MailCatcher) -> None:
    old, new = stack.client("old"), stack.client("new")
    old.register("ada@example.com", PASSWORD, "Ada")
    assert "If an account uses this address" in new.forgot_password("ada@example.com")
    token = token_of(mail_to(mailbox, "ada@example.com", "reset"))
    user = new.reset_password(token, NEW)
    assert user.email == "ada@example.com" and new.state is AuthState.SIGNED_IN
    # The old device's session was ended by the reset: an ordinary sign-out, data kept.
    with pytest.raises(Exception) as ended:
        old.change_password(PASSWORD, "whatever-else")
    assert not isinstance(ended.value, AccountDeletedError)
    assert old.wait_signed_out(20) and old.account_deletion is None
    assert new.change_password(NEW, PASSWORD) == 0


@pytest.fixture
def env(tmp_path: Path, stack: Stack) -> dict[str, str]:
    return {
        "PAPYRUS_CLIENT_DIR": str(tmp_path / "cli"),
        "PAPYRUS_TOKEN_STORE": "file",
        "PAPYRUS_API_URL": stack.api_url,
        "POWERSYNC_SERVICE_URL": stack.sync_url,
        "COLUMNS": "200",
    }


def run(env: dict[str, str], *args: str, input: str | None = None, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), env=env, input=input)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_the_lifecycle_from_the_command_line(
    env: dict[str, str], mailbox: MailCatcher, stack: Stack, tmp_path: Path
) -> None:
    run(
        env,
        "register",
        "--email",
        "ada@example.com",
        "--name",
        "Ada",
        "--password-stdin",
        input=f"{PASSWORD}\n",
    )
    link = next(link for link in mail_to(mailbox, "ada@example.com", "verify").links)
    assert "Confirmed: ada@example.com." in run(env, "email", "verify", link)
    assert "already confirmed" in run(env, "email", "resend", code=1)
    assert "invalid, expired or already used" in run(env, "email", "verify", link, code=1)

    out = run(env, "password", "change", "--password-stdin", input=f"{PASSWORD}\n{NEW}\n")
    assert "Password changed. 0 other device(s)" in out
    wrong = run(env, "password", "change", "--password-stdin", input=f"nope\n{NEW}\n", code=1)
    assert "The password is incorrect. (invalid_password, HTTP 403)" in wrong

    out = run(env, "password", "forgot", "--email", "ada@example.com")
    assert "If an account uses this address" in out
    eventually(lambda: [m for m in mails_to(mailbox, "ada@example.com") if "Reset" in m.subject])
    reset = [m for m in mails_to(mailbox, "ada@example.com") if "Reset" in m.subject]
    bare_token = token_of(reset[0])
    out = run(env, "password", "reset", bare_token, "--password-stdin", input=f"{PASSWORD}\n")
    assert "Signed in as ada@example.com" in out

    out = run(
        env,
        "email",
        "change",
        "--new-email",
        "ada2@example.com",
        "--password-stdin",
        input=f"{PASSWORD}\n",
    )
    assert "ada2@example.com" in out
    confirm = mail_to(mailbox, "ada2@example.com", "confirm_change").links[0]
    assert "now uses ada2@example.com" in run(env, "email", "confirm", confirm)

    run(env, "books", "add", "Dune")
    run(env, "sync", "now")
    export = tmp_path / "export.json"
    assert "Exported" in run(env, "account", "export", str(export))
    document = json.loads(export.read_text())
    assert document["profile"]["email"] == "ada2@example.com"
    assert [b["title"] for b in document["tables"]["books"]] == ["Dune"]
    assert stat.S_IMODE(export.stat().st_mode) == 0o600

    assert "Nothing was deleted" in run(
        env, "account", "delete", "--password-stdin", input=f"n\n{PASSWORD}\n", code=1
    )
    out = run(env, "account", "delete", "--password-stdin", input=f"y\n{PASSWORD}\n")
    assert "was deleted" in out and "cannot be undone" in out
    assert stack.sql("SELECT count(*) FROM users") == [(0,)]
    assert "not signed in" in run(env, "account", "export", str(export), code=1)


def test_the_cli_says_when_unsent_changes_died_with_the_account(
    env: dict[str, str], stack: Stack
) -> None:
    run(
        env,
        "register",
        "--email",
        "ada@example.com",
        "--name",
        "Ada",
        "--password-stdin",
        input=f"{PASSWORD}\n",
    )
    run(env, "books", "add", "Never uploaded")  # no sync: it waits in the queue
    other = stack.client("other")
    other.sign_in("ada@example.com", PASSWORD)
    other.delete_account(PASSWORD)
    out = run(env, "sync", "now", code=1)
    assert "The account ada@example.com has been deleted" in out
    assert "1 change(s) made here had not been uploaded and were discarded" in out
    assert "No books." in run(env, "books", "list")
