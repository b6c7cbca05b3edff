"""A rendered message (subject, plain text, HTML) and its MIME form."""

from __future__ import annotations

import html
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr


@dataclass(frozen=True)
class Mail:
    kind: str
    subject: str
    text: str
    html: str


def mime(
    sender: str, recipient: str, subject: str, text: str, html_body: str | None
) -> EmailMessage:
    """multipart/alternative: the plain text first, the HTML (if any) as the preferred part."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=_domain(sender))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html_body:
        message.add_alternative(html_body, subtype="html")
    return message


def _domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    try:
        return Address(addr_spec=address).domain or "localhost"
    except (ValueError, IndexError):
        return "localhost"


def page(title: str, paragraphs: list[str], link: tuple[str, str] | None = None) -> str:
    """A minimal HTML body: escaped paragraphs and at most one button-like link."""
    body = "".join(f"<p>{html.escape(p)}</p>\n" for p in paragraphs)
    if link is not None:
        label, url = link
        body += (
            f'<p><a href="{html.escape(url, quote=True)}" style="display:inline-block;'
            "padding:10px 18px;background:#3b5bdb;color:#fff;border-radius:6px;"
            f'text-decoration:none">{html.escape(label)}</a></p>\n'
            f'<p style="font-size:13px;color:#555">Or open this address: '
            f"{html.escape(url)}</p>\n"
        )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>\n"
        '<body style="font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto">\n'
        f'<h1 style="font-size:20px">{html.escape(title)}</h1>\n{body}</body></html>\n'
    )
