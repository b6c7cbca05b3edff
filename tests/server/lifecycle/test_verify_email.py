"""Email verification end to end: registration mails a link through real SMTP, the link's
token proves the address once, and nothing else does."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from papyrus.server.accounts.tokens import hash_token
from papyrus.server.app import create_app
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import bearer, free_port, make_settings, register, wait_for
from tests.mailbox import mail_to, mails_to, smtp_settings, token_of


def _verify(client: TestClient, token: str) -> object:
    return client.post("/v1/auth/verify-email", json={"token": token})


def _me(client: TestClient, access: str) -> dict:
    response = client.get("/v1/users/me", headers=bearer(access))
    assert response.status_code == 200, response.text
    return response.json()


def test_registration_mails_a_link_that_verifies_the_address_once(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    body = register(client, email="ada@example.com")
    assert body["user"]["email_verified"] is False
    mail = mail_to(mailbox, "ada@example.com", "verify")
    assert mail.message["From"] == "Papyrus <no-reply@papyrus.test>"
    [link] = [link for link in mail.links if "#token=" in link]
    assert link.startswith("http://testserver/account/verify-email#token=")
    token = token_of(mail)
    assert link in mail.body("html")  # the HTML part carries the same link
    assert mail.path is not None and b"Subject: Confirm your email" in mail.path.read_bytes()
    # Only the token's hash is stored, with the address it was sent to and a 24 h life.
    [(stored, email, ttl)] = sql(
        "SELECT token_hash, email, expires_at - created_at FROM account_tokens"
    )
    assert bytes(stored) == hash_token(token) and email == "ada@example.com"
    assert 24 * 3600 - 60 <= ttl.total_seconds() <= 24 * 3600 + 60
    # Delivered, so the outbox no longer holds the message (nor the link in it).
    wait_for(lambda: sql("SELECT count(*) FROM mail_outbox") == [(0,)], what="outbox emptied")

    verified = _verify(client, token)
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"email": "ada@example.com", "email_verified": True}
    assert _me(client, body["access_token"])["email_verified"] is True
    assert sql("SELECT count(*) FROM account_tokens") == [(0,)]

    again = _verify(client, token)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "invalid_token"


def test_guessed_expired_and_foreign_purpose_tokens_verify_nothing(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    body = register(client, email="bea@example.com")
    token = token_of(mail_to(mailbox, "bea@example.com", "verify"))
    client.post("/v1/auth/password/forgot", json={"email": "bea@example.com"})
    reset_token = token_of(mail_to(mailbox, "bea@example.com", "reset"))

    guessed = _verify(client, "A" * 43)
    # A reset link's token is not a verification token.
    foreign = _verify(client, reset_token)
    sql(
        "UPDATE account_tokens SET expires_at = now() - interval '1 second'"
        " WHERE purpose = 'verify_email'"
    )
    expired = _verify(client, token)
    for response in (guessed, foreign, expired):
        assert response.status_code == 400, response.text
        assert response.json() == guessed.json()
        assert response.json()["error"]["code"] == "invalid_token"
    assert _me(client, body["access_token"])["email_verified"] is False
    malformed = _verify(client, "not a token!")
    assert malformed.status_code == 422


def test_a_link_for_an_address_the_account_gave_up_proves_nothing(
    client: TestClient, mailbox: MailCatcher, sql
) -> None:
    body = register(client, email="old@example.com")
    token = token_of(mail_to(mailbox, "old@example.com", "verify"))
    sql("UPDATE users SET email = 'new@example.com'")
    assert _verify(client, token).status_code == 400
    assert _me(client, body["access_token"])["email_verified"] is False


def test_resend_mails_a_new_link_and_voids_the_old_one(
    client: TestClient, mailbox: MailCatcher
) -> None:
    body = register(client, email="cy@example.com")
    first = token_of(mail_to(mailbox, "cy@example.com", "verify"))
    assert client.post("/v1/auth/verify-email/resend").status_code == 401
    resent = client.post("/v1/auth/verify-email/resend", headers=bearer(body["access_token"]))
    assert resent.status_code == 202, resent.text
    wait_for(lambda: len(mails_to(mailbox, "cy@example.com")) == 2, what="second mail")
    second = token_of(mails_to(mailbox, "cy@example.com")[1])
    assert second != first
    assert _verify(client, first).status_code == 400
    assert _verify(client, second).status_code == 200
    done = client.post("/v1/auth/verify-email/resend", headers=bearer(body["access_token"]))
    assert done.status_code == 409
    assert done.json()["error"]["code"] == "email_already_verified"


def test_mail_to_one_address_is_limited_per_hour(tmp_path: Path, database_url: str) -> None:
    with MailCatcher() as mailbox:
        settings = make_settings(
            tmp_path,
            database_url,
            RATE_LIMIT_MAIL_PER_ADDRESS_PER_HOUR=2,
            **smtp_settings(mailbox.port),
        )
        with TestClient(create_app(settings)) as client:
            body = register(client, email="dee@example.com")  # mail 1 (not counted: signing up)
            headers = bearer(body["access_token"])
            answers = [
                client.post("/v1/auth/verify-email/resend", headers=headers) for _ in range(3)
            ]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert int(answers[2].headers["retry-after"]) > 0
    assert answers[2].json()["error"]["code"] == "rate_limited"


def test_registration_succeeds_while_the_mail_server_is_down_and_mail_follows(
    tmp_path: Path, database_url: str, sql
) -> None:
    """The request never talks to the mail server; the outbox retries until it is back."""
    port = free_port()  # nothing listens here yet
    settings = make_settings(tmp_path, database_url, **smtp_settings(port))
    with TestClient(create_app(settings)) as client:
        body = register(client, email="eve@example.com")
        assert body["user"]["email"] == "eve@example.com"
        [(_, error)] = wait_for(
            lambda: sql(
                "SELECT attempts, last_error FROM mail_outbox WHERE attempts >= 2"
                " AND status = 'pending'"
            ),
            what="failed attempts",
        )
        assert "refused" in error.lower() or "connect" in error.lower(), error
        with MailCatcher(port=port) as mailbox:
            mail = mail_to(mailbox, "eve@example.com", "verify", timeout=30)
            assert _verify(client, token_of(mail)).status_code == 200
        wait_for(lambda: sql("SELECT count(*) FROM mail_outbox") == [(0,)], what="outbox empty")
