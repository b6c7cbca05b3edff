"""`papyrus dev` catches the API's mail on loopback: every message kept as a file under the
data directory and its links printed, so account mail works on one machine with no setup."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.cli.test_serve import PAPYRUS, _env, _stop, _wait_ready
from tests.conftest import free_port


def test_dev_prints_and_keeps_the_mail_the_api_sends(
    tmp_path: Path, pg_server, database_name
) -> None:
    port, sync_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            *PAPYRUS,
            "dev",
            "--port",
            str(port),
            "--sync-port",
            str(sync_port),
            "--data-dir",
            tmp_path,
        ],
        env=_env(DATABASE_URL=pg_server.url(database_name), SMTP_HOST="smtp.invalid"),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        _wait_ready(url, proc)
        registered = httpx.post(
            f"{url}/v1/auth/register",
            json={
                "email": "ada@example.com",
                "password": "password-123",
                "display_name": "Ada",
                "client_type": "cli",
            },
        )
        assert registered.status_code == 201
        printed: list[str] = []
        deadline = time.monotonic() + 30
        while not any("#token=" in line for line in printed):
            assert time.monotonic() < deadline, f"no link printed: {printed}"
            with contextlib.suppress(queue.Empty):
                printed.append(lines.get(timeout=1))
        text = "".join(printed)
        assert "mail catcher on 127.0.0.1:" in text
        assert "mail to ada@example.com: Confirm your email address for Papyrus" in text
        link = next(line.strip() for line in printed if "#token=" in line)
        assert link.startswith("http://localhost:8080/account/verify-email#token=")
        [kept] = (tmp_path / "mail").glob("*.eml")
        message = message_from_bytes(kept.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(("plain",))
        assert body is not None and link in body.get_content()
        token = parse_qs(urlsplit(link).fragment)["token"][0]
        verified = httpx.post(f"{url}/v1/auth/verify-email", json={"token": token})
        assert verified.json() == {"email": "ada@example.com", "email_verified": True}
    finally:
        _stop(proc, signal.SIGINT)
    assert proc.returncode == 0
