"""Delivering one message to the configured SMTP server (aiosmtplib).

STARTTLS (submission, port 587) or implicit TLS (port 465), with certificate verification
against the system's authorities or `SMTP_TLS_CA_FILE`; authentication when a username is set
(only over TLS, unless the server is on this machine: `config.Settings` refuses the rest).
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import aiosmtplib

from papyrus.server.config import Settings


class DeliveryError(Exception):
    """The message was not accepted. `permanent`: the server refused it for good (a 5xx reply
    to the sender, a recipient or the content), so another attempt would fail the same way."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def tls_context(settings: Settings) -> ssl.SSLContext:
    cafile = str(settings.SMTP_TLS_CA_FILE) if settings.SMTP_TLS_CA_FILE else None
    return ssl.create_default_context(cafile=cafile)


async def deliver(settings: Settings, message: EmailMessage) -> None:
    """Sends `message`; raises `DeliveryError` (never anything else) when it was not accepted."""
    assert settings.SMTP_HOST is not None
    security = settings.SMTP_SECURITY
    password = settings.SMTP_PASSWORD.get_secret_value() if settings.SMTP_PASSWORD else None
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.SMTP_HOST,
            port=settings.SMTP_PORT,
            username=settings.SMTP_USERNAME,
            password=password,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=tls_context(settings) if security != "none" else None,
            timeout=settings.SMTP_TIMEOUT_SECONDS,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        # Said without the address, which the error repeats: this text goes to the log.
        codes = [r.code for r in exc.recipients]
        reasons = "; ".join(f"{r.code} {' '.join(r.message.split())}" for r in exc.recipients)
        raise DeliveryError(
            f"recipient refused: {reasons}"[:500], permanent=all(c >= 500 for c in codes)
        ) from None
    except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as exc:
        raise DeliveryError(_describe(exc), permanent=exc.code >= 500) from None
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        # Unreachable, timed out, TLS or authentication trouble: the server or its settings
        # may be fixed, so the message is tried again.
        raise DeliveryError(_describe(exc), permanent=False) from None


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
