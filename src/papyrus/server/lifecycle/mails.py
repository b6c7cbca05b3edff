"""The account messages, rendered once per request (plain text and HTML)."""

from __future__ import annotations

from papyrus.server.config import Settings
from papyrus.server.mail.message import Mail, page

VERIFY_PATH = "/account/verify-email"
RESET_PATH = "/account/reset-password"
CONFIRM_CHANGE_PATH = "/account/confirm-email"


def link(settings: Settings, path: str, token: str) -> str:
    """The token travels in the fragment: browsers never send it to a server, so it stays out
    of access logs, proxies and Referer headers; the page (or the app) reads it from there."""
    return f"{settings.link_base_url()}{path}#token={token}"


def _mail(kind: str, subject: str, paragraphs: list[str], button: tuple[str, str] | None) -> Mail:
    lines = list(paragraphs)
    if button is not None:
        lines.insert(1, button[1])
    text = "\n\n".join(lines) + "\n\n-- \nPapyrus\n"
    return Mail(kind, subject, text, page(subject, paragraphs, button))


def verify_email(settings: Settings, token: str, hours: int) -> Mail:
    url = link(settings, VERIFY_PATH, token)
    return _mail(
        "verify_email",
        "Confirm your email address for Papyrus",
        [
            "Open this link to confirm that this address belongs to your Papyrus account:",
            f"The link works once, for {hours} hours. If you did not create a Papyrus account, "
            "ignore this message: nothing happens without the link.",
        ],
        ("Confirm my address", url),
    )


def reset_password(settings: Settings, token: str, minutes: int) -> Mail:
    """The same text for every account, so rendering it reveals nothing about the address."""
    url = link(settings, RESET_PATH, token)
    return _mail(
        "reset_password",
        "Reset your Papyrus password",
        [
            "Someone (hopefully you) asked to reset the password of the Papyrus account that "
            "uses this address. Open this link to choose a new password:",
            f"The link works once, for {minutes} minutes, and only the newest link works. "
            "Choosing a new password signs out every device. If the account signs in with "
            "Google, that keeps working; the link adds a password. If you did not ask, ignore "
            "this message: your password stays as it is.",
        ],
        ("Choose a new password", url),
    )


def password_changed(settings: Settings) -> Mail:
    return _mail(
        "password_changed",
        "Your Papyrus password was changed",
        [
            "The password of your Papyrus account was just changed, and every other device "
            "was signed out.",
            "If you did not do this, reset your password now from the sign-in screen "
            f"(Forgot password) at {settings.link_base_url()}.",
        ],
        None,
    )


def confirm_new_email(settings: Settings, token: str, new_email: str, hours: int) -> Mail:
    url = link(settings, CONFIRM_CHANGE_PATH, token)
    return _mail(
        "confirm_email_change",
        "Confirm your new email address for Papyrus",
        [
            f"Open this link to make {new_email} the address of your Papyrus account:",
            f"The link works once, for {hours} hours. If you did not ask for this, ignore this "
            "message: the account keeps its current address.",
        ],
        ("Use this address", url),
    )


def email_changed(settings: Settings, new_email: str) -> Mail:
    return _mail(
        "email_changed",
        "Your Papyrus address was changed",
        [
            f"The address of your Papyrus account was changed to {new_email}. Mail about the "
            "account now goes there, and signing in with a password uses it.",
            "If you did not do this, contact the operator of this Papyrus server.",
        ],
        None,
    )
