"""`papyrus dev` catches the API's mail on loopback: every message kept as a file under the
data directory and its links printed, so account mail works on one machine with no setup, and
the links open this API's own pages whatever its port."""

from __future__ import annotations

import contextlib
import queue
import re
import signal
import subprocess
import threading
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.cli.test_serve import PAPYRUS, _env, _stop, _wait_ready
from tests.conftest import free_port

OWN_BASE = "own"


@pytest.mark.parametrize("public_base_url", [OWN_BASE, "http://papyrus.test:1234"])
def test_dev_prints_and_keeps_the_mail_the_api_sends(
    tmp_path: Path, pg_server, database_name, public_base_url: str
) -> None:
    """A random port, never 8080: the mailed link must open this API's page, and that page's
    button must post to this API. A PUBLIC_BASE_URL the user set is theirs to keep."""
    port, sync_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(DATABASE_URL=pg_server.url(database_name), SMTP_HOST="smtp.invalid")
    for name in ("PUBLIC_BASE_URL", "APP_LINK_BASE_URL"):
        env.pop(name, None)
    if public_base_url != OWN_BASE:
        env["PUBLIC_BASE_URL"] = public_base_url
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
        env=env,
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
        [kept] = (tmp_path / "mail").glob("*.eml")
        message = message_from_bytes(kept.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(("plain",))
        assert body is not None and link in body.get_content()
        if public_base_url != OWN_BASE:
            assert link.startswith(f"{public_base_url}/account/verify-email#token=")
            link = f"http://localhost:{port}" + link.removeprefix(public_base_url)
        else:
            # `localhost`, as the documented Google redirect URI and the client say.
            assert link.startswith(f"http://localhost:{port}/account/verify-email#token=")
        page = httpx.get(link)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        # What the page's button does: post the fragment's token to its form's `data-api`.
        match = re.search(r'data-api="([^"]+)"', page.text)
        assert match is not None
        token = link.partition("#token=")[2]
        verified = httpx.post(urljoin(link, match.group(1)), json={"token": token})
        assert verified.json() == {"email": "ada@example.com", "email_verified": True}
    finally:
        _stop(proc, signal.SIGINT)
    assert proc.returncode == 0
