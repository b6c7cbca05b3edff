"""Forgotten passwords end to end through real SMTP, with the hostile cases next to the happy
one: reused, expired, guessed and superseded links, another account's link, and an answer (and
the work behind it) that is the same whether or not an account uses the address."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from papyrus.server.lifecycle import service
from papyrus.server.lifecycle.limits import address_key
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register, wait_for
from tests.mailbox import mail_to, mails_to, token_of

OLD = "correct horse battery"
NEW = "a brand new passphrase"


def _forgot(client: TestClient, email: str) -> Any:
    return client.post("/v1/auth/password/forgot", json={"email": email})


def _reset(client: TestClient, token: str, password: str = NEW, **extra: Any) -> Any:
    body = {"token": token, "new_password": password, "client_type": "desktop", **extra}
    return client.post("/v1/auth/password/reset", json=body)


def _login(client: TestClient, email: str, password: str) -> int:
    body = {"email": email, "password": password, "client_type": "cli"}
    return client.post("/v1/auth/login", json=body).status_code


def test_reset_link_sets_the_password_ends_every_session_and_signs_this_device_in(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    laptop = register(client, email="ada@example.com", password=OLD)
    phone = client.post(
        "/v1/auth/login",
        json={"email": "ada@example.com", "password": OLD, "client_type": "mobile"},
    ).json()
    answer = _forgot(client, "ADA@example.com ")
    assert answer.status_code == 202
    mail = mail_to(mailbox, "ada@example.com", "reset")
    [link] = [link for link in mail.links if "#token=" in link]
    assert link.startswith("http://testserver/account/reset-password#token=")
    [(ttl,)] = sql(
        "SELECT expires_at - created_at FROM account_tokens WHERE purpose = 'reset_password'"
    )
    assert 29 * 60 <= ttl.total_seconds() <= 31 * 60

    reset = _reset(client, token_of(mail), device_label="Ada's desktop")
    assert reset.status_code == 200, reset.text
    tokens = reset.json()
    assert tokens["user"]["email"] == "ada@example.com"
    assert tokens["user"]["email_verified"] is True  # the link reached the address
    assert client.get("/v1/users/me", headers=bearer(tokens["access_token"])).status_code == 200
    for device in (laptop, phone):  # every earlier session ended
        assert client.get("/v1/users/me", headers=bearer(device["access_token"])).status_code == 401
        refresh = client.post("/v1/auth/refresh", json={"refresh_token": device["refresh_token"]})
        assert refresh.status_code == 401
    assert sql("SELECT revoked_reason FROM auth_sessions WHERE revoked_at IS NOT NULL") == [
        ("password_reset",),
        ("password_reset",),
    ]
    assert sql("SELECT device_label FROM auth_sessions WHERE revoked_at IS NULL") == [
        ("Ada's desktop",)
    ]
    assert _login(client, "ada@example.com", OLD) == 401
    assert _login(client, "ada@example.com", NEW) == 200

    reused = _reset(client, token_of(mail), "yet another password")
    assert reused.status_code == 400
    assert reused.json()["error"]["code"] == "invalid_token"
    assert _login(client, "ada@example.com", NEW) == 200


def test_a_newer_link_voids_the_older_one(client: TestClient, mailbox: MailCatcher) -> None:
    register(client, email="bob@example.com", password=OLD)
    _forgot(client, "bob@example.com")
    first = token_of(mail_to(mailbox, "bob@example.com", "reset"))
    _forgot(client, "bob@example.com")
    wait_for(lambda: len(mails_to(mailbox, "bob@example.com")) == 3, what="second reset mail")
    second = token_of(mails_to(mailbox, "bob@example.com")[2])
    assert _reset(client, first).json()["error"]["code"] == "invalid_token"
    assert _reset(client, second).status_code == 200


def test_expired_and_guessed_links_change_nothing(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    register(client, email="cy@example.com", password=OLD)
    _forgot(client, "cy@example.com")
    token = token_of(mail_to(mailbox, "cy@example.com", "reset"))
    guessed = _reset(client, "x" * 43)
    sql("UPDATE account_tokens SET expires_at = now() - interval '1 second'")
    expired = _reset(client, token)
    for response in (guessed, expired):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_token"
    assert _login(client, "cy@example.com", OLD) == 200
    assert sql("SELECT count(*) FROM account_tokens WHERE purpose = 'reset_password'") == [(0,)]


def test_a_link_resets_its_own_account_and_no_other(
    client: TestClient, mailbox: MailCatcher
) -> None:
    register(client, email="victim@example.com", password=OLD)
    register(client, email="attacker@example.com", password=OLD)
    _forgot(client, "attacker@example.com")
    attackers = token_of(mail_to(mailbox, "attacker@example.com", "reset"))
    # The body names no account: there is nothing to point the token at another one with.
    aimed = _reset(client, attackers, email="victim@example.com")
    assert aimed.status_code == 422
    reset = _reset(client, attackers)
    assert reset.json()["user"]["email"] == "attacker@example.com"
    assert _login(client, "victim@example.com", OLD) == 200
    assert _login(client, "victim@example.com", NEW) == 401
    assert mails_to(mailbox, "victim@example.com")[-1].subject.startswith("Confirm")


def test_a_google_only_account_sets_its_first_password(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    body = register(client, email="gina@example.com")
    sql("UPDATE users SET password_hash = NULL")  # as a Google sign-in creates it
    assert body["user"]["has_password"] is True
    _forgot(client, "gina@example.com")
    mail = mail_to(mailbox, "gina@example.com", "reset")
    assert "Google" in mail.body()
    reset = _reset(client, token_of(mail))
    assert reset.json()["user"]["has_password"] is True
    assert _login(client, "gina@example.com", NEW) == 200


@contextmanager
def _recording(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement the API runs through its engine, and every token it makes."""
    seen: list[str] = []
    engine = client.app.state.engine.sync_engine  # type: ignore[attr-defined]

    def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        task = asyncio.current_task()
        if task is None or task.get_name() != "mail-sender":  # the request's, not the sender's
            seen.append(" ".join(sql.split()))

    real = service.new_token

    def counted() -> tuple[str, bytes]:
        seen.append("new_token")
        return real()

    event.listen(engine, "before_cursor_execute", statement)
    monkeypatch.setattr(service, "new_token", counted)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        monkeypatch.setattr(service, "new_token", real)


def test_forgot_answers_and_works_the_same_for_known_and_unknown_addresses(
    client: TestClient, mailbox: MailCatcher, sql, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No oracle: the same status, body and headers, and the same work (a token made and
    hashed, the same statements) whether or not an account uses the address. Counted, not
    timed."""
    register(client, email="known@example.com")
    mail_to(mailbox, "known@example.com", "verify")
    answers, work = [], []
    for email in ("known@example.com", "unknown@example.com"):
        with _recording(client, monkeypatch) as seen:
            answers.append(_forgot(client, email))
        work.append(seen)
    known, unknown = answers
    assert known.status_code == unknown.status_code == 202
    assert known.content == unknown.content
    headers = [{k: v for k, v in a.headers.items() if k != "date"} for a in answers]
    assert headers[0] == headers[1]
    assert work[0] == work[1]
    assert work[0].count("new_token") == 1
    # One statement counts the request and queues the mail: both transactions write (the
    # counter), so both commits wait for the disk; a commit with nothing written would not.
    forgot = [s for s in work[0] if "INSERT INTO mail_outbox" in s]
    assert len(forgot) == 1 and "INSERT INTO rate_limit_counters" in forgot[0]
    settings = client.app.state.settings  # type: ignore[attr-defined]  # set by create_app
    for email in ("known@example.com", "unknown@example.com"):
        key = address_key(settings, email)
        assert sql("SELECT count FROM rate_limit_counters WHERE key = %s", (key,)) == [(1,)]
    # The difference is only in what the database found: a link for the known address.
    mail_to(mailbox, "known@example.com", "reset")
    assert sql("SELECT email FROM account_tokens WHERE purpose = 'reset_password'") == [
        ("known@example.com",)
    ]
    assert mails_to(mailbox, "unknown@example.com") == []


def test_forgot_is_limited_per_address_alike_for_known_and_unknown(
    client: TestClient, mailbox: MailCatcher
) -> None:
    register(client, email="lim@example.com")
    limit = client.app.state.settings.RATE_LIMIT_MAIL_PER_ADDRESS_PER_HOUR  # type: ignore[attr-defined]
    for email in ("lim@example.com", "nolim@example.com"):
        codes = [_forgot(client, email).status_code for _ in range(limit + 1)]
        assert codes == [202] * limit + [429]
