"""Real SMTP on loopback for tests: the server's mail goes to a `MailCatcher` (aiosmtpd) in the
test process, and tests read the delivered messages."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from papyrus.server.mail.catcher import CaughtMail, MailCatcher


def smtp_settings(port: int, **overrides: Any) -> dict[str, Any]:
    """Settings that send to a plain catcher on `port`, retrying quickly."""
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_SECURITY": "none",
        "MAIL_RETRY_BASE_SECONDS": 0.2,
        "MAIL_FROM": "Papyrus <no-reply@papyrus.test>",
        **overrides,
    }


def mail_to(
    mailbox: MailCatcher, address: str, kind: str | None = None, timeout: float = 15.0
) -> CaughtMail:
    """The first message to `address` (whose subject mentions `kind`'s words, if given)."""
    words = {
        None: "",
        "verify": "Confirm your email",
        "reset": "Reset your",
        "changed": "password was changed",
        "confirm_change": "Confirm your new email",
        "email_changed": "address was changed",
    }[kind]
    return mailbox.wait_for(lambda m: address in m.recipients and words in m.subject, timeout)


def mails_to(mailbox: MailCatcher, address: str) -> list[CaughtMail]:
    return [m for m in mailbox.messages if address in m.recipients]


def token_of(mail: CaughtMail) -> str:
    """The token of the (only) account link in a message, from its fragment."""
    [link] = [link for link in mail.links if "#token=" in link]
    return parse_qs(urlsplit(link).fragment)["token"][0]
