"""Text that PostgreSQL can store: one validator for every client string that is kept.

PostgreSQL's `text` and `varchar` hold neither NUL nor unpaired surrogates (which a JSON escape
such as `"\\ud800"` produces). Refused at the edge, such input is a 422 `validation_error`
instead of a 500 from the database.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def check_storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    return value


def storable_or_none(value: str | None) -> str | None:
    """For values from elsewhere (an identity provider): unusable text becomes absent."""
    if value is None:
        return None
    try:
        return check_storable(value)
    except ValueError:
        return None


StoredStr = Annotated[str, AfterValidator(check_storable)]
