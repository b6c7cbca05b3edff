"""Changing the address: confirmed by a link mailed to the new one, the old one is told."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, register
from tests.mailbox import mail_to, mails_to, token_of

PASSWORD = "correct horse battery"


def _change(client: TestClient, access: str, new_email: str, **body: Any) -> Any:
    return client.post(
        "/v1/users/me/email", json={"new_email": new_email, **body}, headers=bearer(access)
    )


def _confirm(client: TestClient, token: str) -> Any:
    return client.post("/v1/auth/email/confirm-change", json={"token": token})


def _login(client: TestClient, email: str) -> int:
    body = {"email": email, "password": PASSWORD, "client_type": "cli"}
    return client.post("/v1/auth/login", json=body).status_code


def test_the_new_address_confirms_and_the_old_one_is_told(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    me = register(client, email="old@example.com", password=PASSWORD)
    asked = _change(client, me["access_token"], "New@Example.com", password=PASSWORD)
    assert asked.status_code == 202, asked.text
    mail = mail_to(mailbox, "new@example.com", "confirm_change")
    [link] = [link for link in mail.links if "#token=" in link]
    assert link.startswith("http://testserver/account/confirm-email#token=")
    # Nothing changes until the link is used.
    assert sql("SELECT email FROM users") == [("old@example.com",)]
    assert _login(client, "old@example.com") == 200

    confirmed = _confirm(client, token_of(mail))
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {"email": "new@example.com", "email_verified": True}
    profile = client.get("/v1/users/me", headers=bearer(me["access_token"])).json()
    assert profile["email"] == "new@example.com" and profile["email_verified"] is True
    notice = mail_to(mailbox, "old@example.com", "email_changed")
    assert "new@example.com" in notice.body() and "#token=" not in notice.body()
    assert _login(client, "new@example.com") == 200
    assert _login(client, "old@example.com") == 401
    # Sign-in records moved with the account: nothing stays under the old address.
    assert sql("SELECT count(*) FROM login_known_sources WHERE email = 'old@example.com'") == [(0,)]
    assert _confirm(client, token_of(mail)).json()["error"]["code"] == "invalid_token"


def test_changing_needs_recent_proof(client: TestClient, mailbox: MailCatcher, sql) -> None:
    me = register(client, email="ada@example.com", password=PASSWORD)
    bare = _change(client, me["access_token"], "taken-over@example.com")
    assert bare.status_code == 403
    assert bare.json()["error"]["code"] == "reauthentication_required"
    wrong = _change(client, me["access_token"], "taken-over@example.com", password="nope-nope")
    assert wrong.status_code == 403
    assert wrong.json()["error"]["code"] == "invalid_password"
    assert sql("SELECT count(*) FROM account_tokens WHERE purpose = 'change_email'") == [(0,)]
    assert mails_to(mailbox, "taken-over@example.com") == []


def test_an_address_in_use_cannot_be_taken(client: TestClient, mailbox: MailCatcher) -> None:
    me = register(client, email="ada@example.com", password=PASSWORD)
    register(client, email="bob@example.com")
    taken = _change(client, me["access_token"], "bob@example.com", password=PASSWORD)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_taken"
    same = _change(client, me["access_token"], "ada@example.com", password=PASSWORD)
    assert same.status_code == 400 and same.json()["error"]["code"] == "same_email"
    # Free when asked, taken by the time the link is used: refused, and the link is spent.
    _change(client, me["access_token"], "cy@example.com", password=PASSWORD)
    token = token_of(mail_to(mailbox, "cy@example.com", "confirm_change"))
    register(client, email="cy@example.com")
    late = _confirm(client, token)
    assert late.status_code == 409 and late.json()["error"]["code"] == "email_taken"
    assert _confirm(client, token).json()["error"]["code"] == "invalid_token"


def test_a_newer_request_voids_the_older_link(client: TestClient, mailbox: MailCatcher) -> None:
    me = register(client, email="ada@example.com", password=PASSWORD)
    _change(client, me["access_token"], "first@example.com", password=PASSWORD)
    first = token_of(mail_to(mailbox, "first@example.com", "confirm_change"))
    _change(client, me["access_token"], "second@example.com", password=PASSWORD)
    second = token_of(mail_to(mailbox, "second@example.com", "confirm_change"))
    assert _confirm(client, first).status_code == 400
    assert _confirm(client, second).json()["email"] == "second@example.com"
