"""Changing the password while signed in: this session stays, the others end, the owner is
told by mail; a wrong current password counts as a failed sign-in."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register
from tests.mailbox import mail_to

OLD = "correct horse battery"
NEW = "a brand new passphrase"


def _change(client: TestClient, access: str, current: str, new: str = NEW) -> Any:
    return client.post(
        "/v1/auth/password/change",
        json={"current_password": current, "new_password": new},
        headers=bearer(access),
    )


def _login(client: TestClient, email: str, password: str) -> Any:
    body = {"email": email, "password": password, "client_type": "cli"}
    return client.post("/v1/auth/login", json=body)


def test_change_keeps_this_session_and_ends_the_others(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    here = register(client, email="ada@example.com", password=OLD)
    other = _login(client, "ada@example.com", OLD).json()
    changed = _change(client, here["access_token"], OLD)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"sessions_revoked": 1}
    assert client.get("/v1/users/me", headers=bearer(here["access_token"])).status_code == 200
    assert (
        client.post("/v1/auth/refresh", json={"refresh_token": here["refresh_token"]}).status_code
        == 200
    )
    assert client.get("/v1/users/me", headers=bearer(other["access_token"])).status_code == 401
    assert (
        client.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code
        == 401
    )
    assert sql("SELECT revoked_reason FROM auth_sessions WHERE revoked_at IS NOT NULL") == [
        ("password_changed",)
    ]
    assert _login(client, "ada@example.com", OLD).status_code == 401
    assert _login(client, "ada@example.com", NEW).status_code == 200
    notice = mail_to(mailbox, "ada@example.com", "changed")
    assert "#token=" not in notice.body()


def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failure(
    client: TestClient, sql
) -> None:
    here = register(client, email="bob@example.com", password=OLD)
    [(before,)] = sql("SELECT password_hash FROM users")
    wrong = _change(client, here["access_token"], "not my password")
    assert wrong.status_code == 403  # not 401: the session itself is fine
    assert wrong.json()["error"]["code"] == "invalid_password"
    assert sql("SELECT password_hash FROM users") == [(before,)]
    assert sql("SELECT email FROM login_failures") == [("bob@example.com",)]
    assert client.get("/v1/users/me", headers=bearer(here["access_token"])).status_code == 200


def test_a_locked_out_source_cannot_guess_through_the_change_endpoint(
    tmp_path, database_url: str, mailbox: MailCatcher
) -> None:
    from papyrus.server.app import create_app
    from tests.conftest import make_settings
    from tests.mailbox import smtp_settings

    settings = make_settings(
        tmp_path,
        database_url,
        RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE=2,
        **smtp_settings(mailbox.port),
    )
    with TestClient(create_app(settings)) as client:
        here = register(client, email="cy@example.com", password=OLD)
        codes = [_change(client, here["access_token"], "guess").status_code for _ in range(2)]
        locked = _change(client, here["access_token"], OLD)  # even the right one
    assert codes == [403, 403]
    assert locked.status_code == 429


def test_without_a_password_or_a_session_there_is_nothing_to_change(
    client: TestClient, sql
) -> None:
    here = register(client, email="gina@example.com", password=OLD)
    assert _change(client, "not-a-token", OLD).status_code == 401
    too_short = _change(client, here["access_token"], OLD, "short")
    assert too_short.status_code == 422
    sql("UPDATE users SET password_hash = NULL")  # a Google-only account
    none = _change(client, here["access_token"], OLD)
    assert none.status_code == 400
    assert none.json()["error"]["code"] == "no_password"
