"""A crash loses no mail: a message queued while the mail server is down survives the API process
being killed, and a sender that dies holding a claimed message leaves it to the next sender
once its lease expires. Each is delivered exactly once, through real SMTP on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from papyrus.server.db import create_engine, session_factory
from papyrus.server.mail.catcher import MailCatcher
from papyrus.server.mail.outbox import MailSender
from tests.cli.test_serve import PAPYRUS, _env, _wait_ready
from tests.conftest import free_port, make_settings, wait_for
from tests.mailbox import mail_to, mails_to, smtp_settings, token_of


def _outbox(sql) -> list[tuple]:
    return sql("SELECT status, attempts, next_attempt_at > now() FROM mail_outbox")


def test_mail_queued_before_the_api_is_killed_is_delivered_once_by_the_next_one(
    tmp_path: Path, database_url: str, sql
) -> None:
    """Registration while the mail server is down, then the API process is killed (SIGKILL:
    nothing runs on the way out); a new API process, with a working mail server, delivers the
    message, once."""
    url = f"http://127.0.0.1:{free_port()}"
    env = _env(
        DATABASE_URL=database_url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(free_port()),  # nothing listens there
        SMTP_SECURITY="none",
        SMTP_TIMEOUT_SECONDS="1",
        MAIL_RETRY_BASE_SECONDS="1",
    )
    cmd = [*PAPYRUS, "serve", "--no-migrate", "--port", url.rsplit(":", 1)[1]]
    proc = subprocess.Popen(
        [*cmd, "--data-dir", str(tmp_path / "first")], env=env, start_new_session=True
    )
    try:
        _wait_ready(url, proc)
        registered = httpx.post(
            f"{url}/v1/auth/register",
            json={
                "email": "ada@example.com",
                "password": "correct horse battery",
                "display_name": "Ada",
                "client_type": "cli",
            },
        )
        assert registered.status_code == 201, registered.text
        # Killed between two failed attempts (the next one over a second away, and well short
        # of a claim's lease of 75 s), so the message is not in the middle of a delivery: that
        # case is the next test's.
        wait_for(
            lambda: sql(
                "SELECT 1 FROM mail_outbox WHERE attempts >= 2 AND next_attempt_at"
                " BETWEEN now() + interval '1 second' AND now() + interval '30 seconds'"
            ),
            timeout=30,
            what="two failed attempts",
        )
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    [(status, attempts, _)] = _outbox(sql)
    assert status == "pending" and attempts >= 2

    with MailCatcher() as mailbox:
        settings = make_settings(tmp_path, database_url, **smtp_settings(mailbox.port))
        with TestClient(create_app(settings)) as client:
            mail = mail_to(mailbox, "ada@example.com", "verify", timeout=30)
            wait_for(lambda: _outbox(sql) == [], what="the outbox emptied")
            verified = client.post("/v1/auth/verify-email", json={"token": token_of(mail)})
            assert verified.status_code == 200, verified.text
        assert len(mails_to(mailbox, "ada@example.com")) == 1


def test_a_sender_that_dies_mid_delivery_leaves_the_message_to_the_next_once_its_lease_expires(
    tmp_path: Path, database_url: str, sql
) -> None:
    """The first sender claims the message and is cut off while a stalled mail server has not
    even greeted it (as a killed process would be: nothing after the claim is written). While
    the lease holds, another sender leaves the message alone; once it expired, the other sender
    delivers it, once."""
    sql(
        "INSERT INTO mail_outbox (kind, recipient, subject, body_text)"
        " VALUES ('test', 'ada@example.com', 'Hello', 'Hello Ada')"
    )
    stalled = socket.create_server(("127.0.0.1", 0), backlog=8)  # accepts, never speaks
    with stalled, MailCatcher() as mailbox:
        dying = make_settings(
            tmp_path,
            database_url,
            **smtp_settings(stalled.getsockname()[1], SMTP_TIMEOUT_SECONDS=60),
        )
        working = make_settings(tmp_path, database_url, **smtp_settings(mailbox.port))

        async def scenario() -> list[int]:
            engine = create_engine(database_url)
            try:
                sessions = session_factory(engine)
                first = asyncio.create_task(MailSender(dying, sessions).deliver_due())
                while _outbox(sql) != [("pending", 1, True)]:  # claimed, lease committed
                    assert not first.done(), first
                    await asyncio.sleep(0.02)
                first.cancel()  # dies mid-delivery
                await asyncio.gather(first, return_exceptions=True)
                second = MailSender(working, sessions)
                claimed = [(await second.deliver_due())[0]]  # the lease still holds
                sql("UPDATE mail_outbox SET next_attempt_at = now() - interval '1 second'")
                claimed.append((await second.deliver_due())[0])
                claimed.append((await second.deliver_due())[0])
                return claimed
            finally:
                await engine.dispose()

        claimed = asyncio.run(scenario())
        assert claimed == [0, 1, 0]
        [mail] = mailbox.messages
        assert mail.recipients == ("ada@example.com",) and mail.body().strip() == "Hello Ada"
    assert _outbox(sql) == []
