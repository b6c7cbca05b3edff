"""What the connector makes of the server's refusals: a verdict on the data completes the
transaction (recorded as a rejection); anything else keeps it queued for the next attempt."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from papyrus.client import ApiError, BookRepository, PapyrusConnector, PowerSyncDatabase
from papyrus.client.auth import UploadResult
from papyrus.client.errors import TransientError

USER = "11111111-1111-4111-8111-111111111111"


class RefusingAuth:
    """Stands in for the session owner: its upload answers with the given API error."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
        self.uploads = 0

    def upload_powersync_batch(self, batch: list[dict[str, Any]]) -> UploadResult:
        self.uploads += 1
        raise self.error


def connector_refusing(status: int, code: str) -> tuple[PapyrusConnector, RefusingAuth]:
    auth = RefusingAuth(ApiError(status, code, "refused"))
    return PapyrusConnector(auth, "http://127.0.0.1:9"), auth  # type: ignore[arg-type]


@pytest.mark.parametrize(("status", "code"), [(401, "invalid_token"), (408, "request_timeout")])
def test_a_refusal_that_is_not_about_the_data_keeps_the_transaction(
    open_db: Callable[..., PowerSyncDatabase], status: int, code: str
) -> None:
    db = open_db()
    BookRepository(db, USER).add("Kept")
    connector, auth = connector_refusing(status, code)
    with pytest.raises(TransientError):
        connector.upload_data(db)
    assert auth.uploads == 1
    assert db.upload_queue_size() == 1
    assert db.get_all("SELECT * FROM upload_rejections") == []


def test_a_verdict_on_the_data_completes_and_records_the_transaction(
    open_db: Callable[..., PowerSyncDatabase],
) -> None:
    db = open_db()
    BookRepository(db, USER).add("Refused")
    connector, _ = connector_refusing(413, "transaction_too_large")
    connector.upload_data(db)
    assert db.upload_queue_size() == 0
    rows = db.get_all("SELECT code FROM upload_rejections")
    assert rows == [{"code": "transaction_too_large"}]
