"""The BackendConnector contract and Papyrus's implementation of it."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from papyrus.client import limits
from papyrus.client.auth import AuthRepository, Rejection, UploadResult
from papyrus.client.crud import CrudTransaction
from papyrus.client.errors import ApiError, SignedOutError, TransientError

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
    transaction to `POST /v1/sync/powersync-upload`, or, when it exceeds one request's limits,
    in parts to `POST /v1/sync/powersync-upload/parts` (a staged upload the server applies as
    one transaction). Rejections are kept locally."""

    def __init__(self, auth: AuthRepository, powersync_url: str) -> None:
        self.auth = auth
        self.powersync_url = powersync_url.rstrip("/")
        # The staged upload in flight and the next part it needs, so that after a failed part
        # the retry resumes there instead of resending the parts the server already holds.
        self._resume: tuple[uuid.UUID, int] | None = None

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
        parts = split_into_parts([encode_entry(entry) for entry in batch])
        try:
            if len(parts) == 1:
                result = self.auth.upload_powersync_batch(batch)
            else:
                result = self._upload_in_parts(database, tx, parts)
        except ApiError as exc:
            if exc.status_code in _NOT_A_VERDICT:
                # The session changed under the upload (a 401 even after a refresh) or the
                # request was too slow: nothing was said about the data, so keep it and retry.
                raise TransientError(
                    f"the upload was not accepted ({exc.status_code} {exc.code}); "
                    "it will be sent again"
                ) from exc
            # Any other 4xx will fail the same way forever: record it and move on, so one bad
            # write cannot block every later one (and every download) for good.
            rejections = [Rejection(e.client_id, e.id, exc.code, exc.message) for e in tx.crud]
            result = UploadResult("rejected", 0, rejections)
        with database.write_transaction():
            if result.status == "rejected" or result.rejections or result.dropped:
                record_rejections(database, tx, result)
            tx.complete()

    def _upload_in_parts(
        self, database: PowerSyncDatabase, tx: CrudTransaction, parts: list[list[bytes]]
    ) -> UploadResult:
        """Sends the parts in order; the last one's answer is the whole transaction's. Failures
        raise (the sync loop retries, resuming at the failed part); when the server no longer
        holds the earlier parts, the whole transaction is sent again from part 0, once."""
        upload_id = staged_upload_id(database.client_id(), tx)
        resume = self._resume
        index = resume[1] if resume is not None and resume[0] == upload_id else 0
        restarted = False
        while True:
            last = index == len(parts) - 1
            body = encode_part(upload_id, index, len(parts), tx.transaction_id, parts[index])
            try:
                result = self.auth.upload_powersync_part(
                    body, timeout=LAST_PART_TIMEOUT if last else None
                )
            except ApiError as exc:
                if exc.code not in _RESTART_CODES:
                    self._resume = None
                    raise
                if restarted:
                    raise TransientError(
                        f"the server lost the staged parts of transaction {tx.transaction_id} "
                        f"again ({exc.code}); it will be sent again later"
                    ) from exc
                log.info("staged upload %s: %s, sending it again from part 0", upload_id, exc.code)
                restarted, index = True, 0
                continue
            if result.status != "staged":
                self._resume = None
                return result
            index += 1
            self._resume = (upload_id, index)


# Refusals that say nothing about the data: the transaction stays queued and is sent again.
_NOT_A_VERDICT = frozenset({401, 408})
# Answers to a part that mean "send the whole transaction again, from part 0".
_RESTART_CODES = frozenset({"upload_parts_missing", "upload_part_mismatch"})
# The last part of a staged upload makes the server apply the whole transaction (up to
# MAX_TRANSACTION_OPERATIONS changes), possibly after waiting for another assembly to finish.
LAST_PART_TIMEOUT = 300.0


def encode_entry(entry: dict[str, Any]) -> bytes:
    """A CRUD entry as it goes on the wire (the encoding httpx uses for `json=`)."""
    try:
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped, it is still valid JSON
        return json.dumps(entry, separators=(",", ":")).encode()


def split_into_parts(encoded: list[bytes]) -> list[list[bytes]]:
    """Consecutive runs of entries, each within one request's limits (entry count and bytes)."""
    budget = limits.MAX_REQUEST_BYTES - limits.PART_ENVELOPE_BYTES
    parts: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for entry in encoded:
        cost = len(entry) + 1  # and a comma
        if current and (len(current) == limits.MAX_REQUEST_OPERATIONS or size + cost > budget):
            parts.append(current)
            current, size = [], 0
        current.append(entry)
        size += cost
    if current:
        parts.append(current)
    return parts


def encode_part(
    upload_id: uuid.UUID, index: int, count: int, tx_id: int | None, entries: list[bytes]
) -> bytes:
    head = json.dumps(
        {"upload_id": str(upload_id), "index": index, "count": count, "tx_id": tx_id},
        separators=(",", ":"),
    )
    return head[:-1].encode() + b',"batch":[' + b",".join(entries) + b"]}"


def staged_upload_id(client_id: str, tx: CrudTransaction) -> uuid.UUID:
    """The same for every attempt at one queued transaction, even across restarts, so a retry
    replaces the server's earlier parts instead of leaving an abandoned upload behind."""
    first, last = tx.crud[0].client_id, tx.crud[-1].client_id
    name = f"papyrus-staged-upload:{client_id}:{tx.transaction_id}:{first}:{last}:{len(tx.crud)}"
    return uuid.uuid5(uuid.NAMESPACE_URL, name)


def record_rejections(
    database: PowerSyncDatabase, tx: CrudTransaction, result: UploadResult
) -> None:
    """Keeps the server's verdicts in the local-only `upload_rejections` table: the changes it
    refused (the whole transaction was not applied) and the late changes it dropped from an
    applied one (their row, or its parent, was deleted meanwhile). One log line per
    transaction, however many of its changes were refused or dropped."""
    by_op = {e.client_id: e for e in tx.crud}
    refused = list(result.rejections)
    if result.status == "rejected" and not refused:
        refused = [
            Rejection(e.client_id, e.id, "rejected", "the server rejected this change")
            for e in tx.crud
        ]
    if refused:
        first = refused[0]
        log.warning(
            "upload rejected: transaction %s (%d changes) was not applied; %d rejection(s) "
            "recorded in upload_rejections, the first: %s: %s (%s)",
            tx.transaction_id,
            len(tx.crud),
            len(refused),
            first.code,
            first.message,
            first.id,
        )
    if result.dropped:
        first = result.dropped[0]
        log.warning(
            "upload applied without %d late change(s) to rows deleted meanwhile (transaction "
            "%s), recorded in upload_rejections, the first: %s: %s (%s)",
            len(result.dropped),
            tx.transaction_id,
            first.code,
            first.message,
            first.id,
        )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for r in [*refused, *result.dropped]:
        entry = by_op.get(r.op_id) if r.op_id is not None else None
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
