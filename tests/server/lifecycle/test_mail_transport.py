"""The outbox sender against real SMTP servers on loopback (aiosmtpd): STARTTLS and implicit
TLS with a self-signed certificate, authentication, refusals, retries, expiry, several
senders over one outbox, and what the operator sees."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from papyrus.cli.main import app as cli
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from papyrus.server.db import create_engine, session_factory
from papyrus.server.mail.catcher import MailCatcher, _Handler
from papyrus.server.mail.outbox import MailSender, list_outbox
from tests.conftest import free_port, make_settings, register, wait_for
from tests.mailbox import mail_to, smtp_settings


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "papyrus test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


class Logins:
    """An aiosmtpd authenticator that knows one user and records every attempt."""

    def __init__(self, username: str, password: str) -> None:
        self.expected = (username.encode(), password.encode())
        self.attempts: list[str] = []

    def __call__(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.attempts.append(data.login.decode())
        # handled=False: aiosmtpd then answers 535 itself.
        return AuthResult(success=(data.login, data.password) == self.expected, handled=False)


def _app_settings(tmp_path: Path, database_url: str, **values: Any) -> Settings:
    return make_settings(tmp_path, database_url, PUBLIC_BASE_URL="http://testserver", **values)


def _outbox(sql) -> list[tuple[Any, ...]]:
    return sql("SELECT status, attempts, last_error, body_text IS NULL FROM mail_outbox")


def test_starttls_with_a_self_signed_certificate_and_authentication(
    tmp_path: Path, database_url: str, certificate: tuple[Path, Path]
) -> None:
    logins = Logins("papyrus", "relay-secret")
    with MailCatcher(
        tls_context=_server_context(certificate),
        require_starttls=True,
        authenticator=logins,
        auth_required=True,
    ) as relay:
        settings = _app_settings(
            tmp_path,
            database_url,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=relay.port,
            SMTP_SECURITY="starttls",
            SMTP_TLS_CA_FILE=certificate[0],
            SMTP_USERNAME="papyrus",
            SMTP_PASSWORD="relay-secret",
        )
        with TestClient(create_app(settings)) as client:
            register(client, email="ada@example.com")
            mail = mail_to(relay, "ada@example.com", "verify")
    assert mail.tls and mail.authenticated
    assert logins.attempts == ["papyrus"]


def test_implicit_tls(tmp_path: Path, database_url: str, certificate: tuple[Path, Path]) -> None:
    with MailCatcher(ssl_context=_server_context(certificate)) as relay:
        settings = _app_settings(
            tmp_path,
            database_url,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=relay.port,
            SMTP_SECURITY="tls",
            SMTP_TLS_CA_FILE=certificate[0],
        )
        with TestClient(create_app(settings)) as client:
            register(client, email="ada@example.com")
            mail = mail_to(relay, "ada@example.com", "verify")
    assert "#token=" in mail.body()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("problem", ["untrusted certificate", "wrong password", "no starttls"])
def test_nothing_is_sent_to_a_server_that_cannot_be_trusted_or_refuses_the_login(
    tmp_path: Path, database_url: str, certificate: tuple[Path, Path], sql, problem: str
) -> None:
    """The message stays pending with the reason, for a later attempt once fixed."""
    logins = Logins("papyrus", "relay-secret")
    with MailCatcher(
        tls_context=_server_context(certificate) if problem != "no starttls" else None,
        authenticator=logins,
        auth_required=True,
        auth_require_tls=False,
    ) as relay:
        settings = _app_settings(
            tmp_path,
            database_url,
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=relay.port,
            SMTP_SECURITY="starttls",
            SMTP_TLS_CA_FILE=None if problem == "untrusted certificate" else certificate[0],
            SMTP_USERNAME="papyrus",
            SMTP_PASSWORD="wrong" if problem == "wrong password" else "relay-secret",
            MAIL_RETRY_BASE_SECONDS=60,
        )
        with TestClient(create_app(settings)) as client:
            register(client, email="ada@example.com")
            [(status, attempts, error, _)] = wait_for(
                lambda: [row for row in _outbox(sql) if row[1] >= 1 and row[2]],
                what="a failed attempt",
            )
    assert relay.messages == []
    assert status == "pending" and attempts == 1
    expected = {
        "untrusted certificate": "certificate verify failed",
        "wrong password": "SMTPAuthenticationError",
        "no starttls": "STARTTLS",
    }[problem]
    assert expected.lower() in error.lower(), error
    if problem == "untrusted certificate":
        assert logins.attempts == []  # the password never went to an unverified server


class RefusingHandler(_Handler):
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class RefusingCatcher(MailCatcher):
    handler_class = RefusingHandler


def test_a_permanent_refusal_fails_at_once_and_the_operator_sees_it(
    tmp_path: Path,
    database_url: str,
    sql,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="papyrus.server.mail")
    with RefusingCatcher() as relay:
        settings = _app_settings(tmp_path, database_url, **smtp_settings(relay.port))
        with TestClient(create_app(settings)) as client:
            register(client, email="gone@example.com")
            register(client, email="here@example.com")
            mail_to(relay, "here@example.com", "verify")
            wait_for(lambda: _outbox(sql) and _outbox(sql)[0][0] == "failed", what="failed")
    [(status, attempts, error, cleared)] = _outbox(sql)
    assert (status, attempts, cleared) == ("failed", 1, True)  # no retries, body gone
    assert "550" in error
    [line] = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
    assert "g***@example.com" in line and "gone@example.com" not in line

    monkeypatch.setenv("DATABASE_URL", database_url)
    shown = CliRunner().invoke(cli, ["mail", "outbox"], env={"DATABASE_URL": database_url})
    assert shown.exit_code == 0, shown.output
    assert "gone@example.com" in shown.output and "failed" in shown.output
    assert "550" in shown.output
    assert "here@example.com" not in shown.output  # delivered, so no longer in the outbox


def test_a_message_fails_after_the_last_attempt(tmp_path: Path, database_url: str, sql) -> None:
    settings = _app_settings(
        tmp_path, database_url, **smtp_settings(free_port(), MAIL_MAX_ATTEMPTS=3)
    )
    with TestClient(create_app(settings)) as client:
        register(client, email="ada@example.com")
        wait_for(lambda: _outbox(sql)[0][0] == "failed", timeout=30, what="given up")
    [(_, attempts, error, cleared)] = _outbox(sql)
    assert attempts == 3 and cleared and error


def test_a_link_that_expired_before_delivery_is_not_sent(
    tmp_path: Path, database_url: str, sql
) -> None:
    port = free_port()
    settings = _app_settings(tmp_path, database_url, **smtp_settings(port))
    with TestClient(create_app(settings)) as client:
        register(client, email="ada@example.com")
        wait_for(lambda: _outbox(sql)[0][1] >= 1, what="a first attempt")
        sql("UPDATE mail_outbox SET expires_at = now() - interval '1 second'")
        with MailCatcher(port=port) as relay:
            wait_for(lambda: _outbox(sql)[0][0] == "failed", what="expired")
            assert relay.messages == []
    assert "expired" in _outbox(sql)[0][2]


@pytest.fixture
def sessions(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    asyncio.run(engine.dispose())


def test_several_senders_deliver_each_message_exactly_once(
    tmp_path: Path, database_url: str, sql, sessions: Any
) -> None:
    """Four senders (as four worker processes would) drain one outbox concurrently."""
    count = 40
    sql(
        "INSERT INTO mail_outbox (kind, recipient, subject, body_text)"
        " SELECT 'test', 'reader' || n || '@example.com', 'Message ' || n, 'Hello'"
        " FROM generate_series(1, %s) n",
        (count,),
    )
    with MailCatcher() as relay:
        settings = _app_settings(tmp_path, database_url, **smtp_settings(relay.port))

        async def drain() -> None:
            senders = [MailSender(settings, sessions) for _ in range(4)]

            async def run(sender: MailSender) -> None:
                while (await sender.deliver_due())[0]:
                    pass

            await asyncio.gather(*(run(s) for s in senders))

        asyncio.run(drain())
        received = sorted(m.subject for m in relay.messages)
    assert received == sorted(f"Message {n}" for n in range(1, count + 1))
    assert sql("SELECT count(*) FROM mail_outbox") == [(0,)]
    assert list_outbox(database_url) == []
