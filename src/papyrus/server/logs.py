"""Log hygiene: no one-time codes, states or tokens in access logs."""

from __future__ import annotations

import logging


class RedactQueryStrings(logging.Filter):
    """Drops the query string from uvicorn's access lines.

    OAuth callbacks carry the provider's code and state in the query; single-use as they are,
    they have no business in a log file.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, sep, _ = args[2].partition("?")
            if sep:
                record.args = (*args[:2], f"{path}?[redacted]", *args[3:])
        return True


def install_log_redaction() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQueryStrings) for f in access.filters):
        access.addFilter(RedactQueryStrings())
