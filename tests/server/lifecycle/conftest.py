"""The API with its mail going to a real SMTP server on loopback (a `MailCatcher`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from papyrus.server.config import Settings
from papyrus.server.mail.catcher import MailCatcher
from tests.conftest import make_settings
from tests.mailbox import smtp_settings


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[MailCatcher]:
    with MailCatcher(tmp_path / "caught") as catcher:
        yield catcher


@pytest.fixture
def settings(tmp_path: Path, database_url: str, mailbox: MailCatcher) -> Settings:
    """Overrides the root fixture: mail goes to `mailbox`, links point at the test server."""
    return make_settings(
        tmp_path,
        database_url,
        PUBLIC_BASE_URL="http://testserver",
        **smtp_settings(mailbox.port),
    )
