"""The BackendConnector contract and Papyrus's implementation of it."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from papyrus.client.auth import AuthRepository, Rejection, UploadResult
from papyrus.client.crud import CrudTransaction
from papyrus.client.errors import ApiError, SignedOutError

if TYPE_CHECKING:
    from papyrus.client.database import PowerSyncDatabase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Credentials:
    """Where the sync service is and the token to show it (`Authorization: Token ...`)."""

    endpoint: str
    token: str
    expires_at: datetime | None = None


class BackendConnector(Protocol):
    """What the sync loop needs from the app.

    `fetch_credentials()` returns `Credentials`, or None when nobody is signed in (the loop then
    waits and asks again). It is called on every (re)connect and when the token nears expiry.

    `upload_data(database)` takes queued writes (`database.get_next_crud_transaction()`), sends
    them to the app's backend and calls `complete()` on them once the backend has accepted or
    permanently rejected them. Raise to have the same writes retried after a delay.
    """

    def fetch_credentials(self) -> Credentials | None: ...

    def upload_data(self, database: PowerSyncDatabase) -> None: ...


class PapyrusConnector:
    """Gets sync tokens from `POST /v1/auth/powersync-token` and uploads each queued
    transaction to `POST /v1/sync/powersync-upload`; rejections are kept locally."""

    def __init__(self, auth: AuthRepository, powersync_url: str) -> None:
        self.auth = auth
        self.powersync_url = powersync_url.rstrip("/")

    def fetch_credentials(self) -> Credentials | None:
        try:
            token = self.auth.create_powersync_token()
        except SignedOutError:
            return None
        expires_at = datetime.now(UTC) + timedelta(seconds=token.expires_in)
        return Credentials(self.powersync_url, token.token, expires_at)

    def upload_data(self, database: PowerSyncDatabase) -> None:
        tx = database.get_next_crud_transaction()
        if tx is None:
            return
        batch = [entry.to_json() for entry in tx.crud]
        try:
            result = self.auth.upload_powersync_batch(batch)
        except ApiError as exc:
            # A 4xx other than 401 will fail the same way forever: record it and move on, so
            # one bad write cannot block every later one (and every download) for good.
            log.warning("upload refused with %s: %s", exc.status_code, exc.message)
            rejections = [Rejection(e.client_id, e.id, exc.code, exc.message) for e in tx.crud]
            result = UploadResult("rejected", 0, rejections)
        with database.write_transaction():
            if result.status == "rejected" or result.rejections:
                record_rejections(database, tx, result)
            tx.complete()


def record_rejections(
    database: PowerSyncDatabase, tx: CrudTransaction, result: UploadResult
) -> None:
    """Keeps the server's verdicts in the local-only `upload_rejections` table."""
    by_op = {e.client_id: e for e in tx.crud}
    rejections = result.rejections or [
        Rejection(e.client_id, e.id, "rejected", "the server rejected this change") for e in tx.crud
    ]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for r in rejections:
        entry = by_op.get(r.op_id) if r.op_id is not None else None
        log.warning("upload rejected: %s %s (%s)", r.code, r.message, r.id)
        database.execute(
            "INSERT INTO upload_rejections"
            " (id, op_id, row_id, row_type, op, code, message, rejected_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(uuid.uuid4()),
                r.op_id,
                r.id or (entry.id if entry else None),
                entry.table if entry else None,
                str(entry.op) if entry else None,
                r.code,
                r.message,
                now,
            ),
        )
