"""Everything the server holds about an account, as one JSON document.

The document is written from one REPEATABLE READ, read-only transaction (a consistent snapshot,
even while devices upload) into a spooled temporary file: in memory up to `SPOOL_IN_MEMORY`,
on disk beyond. The transaction and its connection end before the first byte is sent, so a
slow client holds a file, never a database connection; rows are fetched in batches from a
server-side cursor, so memory stays bounded whatever the library's size. Each process writes
at most `CONCURRENT_EXPORTS` documents at once.

The synced tables are those declared in `papyrus.contract.TABLES`: a table added there is
exported without a change here. Each row is PostgreSQL's own `row_to_json`, every column as
stored (timestamps in ISO 8601, JSON columns as JSON).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import IO, Any

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from papyrus.contract import OWNER, TABLES

FORMAT = "papyrus-account-export"
VERSION = 1
SPOOL_IN_MEMORY = 4 * 1024 * 1024
CONCURRENT_EXPORTS = 2
_CHUNK = 64 * 1024
_BATCH = 1000

# The account's own records outside the synced tables. `{user}` / `{email}` bind the user.
_PROFILE_SQL = """
    SELECT json_build_object(
        'id', id, 'email', email, 'email_verified', email_verified,
        'has_password', password_hash IS NOT NULL, 'display_name', display_name,
        'avatar_url', avatar_url, 'created_at', created_at, 'updated_at', updated_at)::text
    FROM users WHERE id = :user_id
    """
_SECTIONS: tuple[tuple[str, str], ...] = (
    (
        "identities",
        """SELECT json_build_object('provider', provider, 'subject', subject, 'email', email,
                                    'linked_at', created_at)::text
           FROM oauth_identities WHERE user_id = :user_id ORDER BY created_at, id""",
    ),
    (
        "sessions",
        """SELECT json_build_object('id', id, 'client_type', client_type,
                                    'device_label', device_label, 'created_at', created_at,
                                    'last_seen_at', last_seen_at, 'revoked_at', revoked_at,
                                    'revoked_reason', revoked_reason,
                                    'google_authenticated_at', google_authenticated_at)::text
           FROM auth_sessions WHERE user_id = :user_id ORDER BY created_at, id""",
    ),
    (
        "sign_in_sources",
        """SELECT json_build_object('source', source, 'last_success_at', last_success_at)::text
           FROM login_known_sources WHERE email = :email ORDER BY last_success_at""",
    ),
    (
        # Failed password sign-ins for the address (kept a day): the owner's typos, or someone
        # guessing; the same sources a sign-in limit counts.
        "login_failures",
        """SELECT json_build_object('source', source, 'failed_at', failed_at)::text
           FROM login_failures WHERE email = :email ORDER BY failed_at, id""",
    ),
    (
        "pending_links",
        """SELECT json_build_object('purpose', purpose, 'email', email,
                                    'created_at', created_at, 'expires_at', expires_at)::text
           FROM account_tokens WHERE user_id = :user_id ORDER BY created_at""",
    ),
    (
        "unsent_mail",
        """SELECT json_build_object('kind', kind, 'recipient', recipient, 'subject', subject,
                                    'status', status, 'created_at', created_at)::text
           FROM mail_outbox WHERE user_id = :user_id ORDER BY created_at, id""",
    ),
    (
        "sync_rejections",
        """SELECT (to_jsonb(r) - 'user_id')::text
           FROM sync_rejections r WHERE user_id = :user_id ORDER BY id""",
    ),
    (
        "staged_uploads",
        """SELECT json_build_object('upload_id', upload_id, 'part_index', part_index,
                                    'part_count', part_count, 'entry_count', entry_count,
                                    'created_at', created_at)::text
           FROM sync_upload_parts WHERE user_id = :user_id ORDER BY upload_id, part_index""",
    ),
    (
        # Ids of synced rows deleted in the last `TOMBSTONE_DAYS` (late writes to them are
        # dropped): which of the account's rows are gone, not what they held.
        "sync_tombstones",
        """SELECT json_build_object('table', table_name, 'row_id', row_id,
                                    'deleted_at', deleted_at)::text
           FROM sync_tombstones WHERE user_id = :user_id
           ORDER BY deleted_at, table_name, row_id""",
    ),
)


class ExportDocument(BaseModel):
    """The shape of `GET /v1/users/me/export` (documentation only: the body is streamed)."""

    format: str = FORMAT
    version: int = VERSION
    exported_at: datetime
    profile: dict[str, Any]
    identities: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    sign_in_sources: list[dict[str, Any]]
    login_failures: list[dict[str, Any]]
    pending_links: list[dict[str, Any]]
    unsent_mail: list[dict[str, Any]]
    sync_rejections: list[dict[str, Any]]
    staged_uploads: list[dict[str, Any]]
    sync_tombstones: list[dict[str, Any]]
    tables: dict[str, list[dict[str, Any]]] = Field(
        description="Every synced table declared in the contract: the account's rows, as stored."
    )


async def write_export(engine: AsyncEngine, user_id: uuid.UUID, out: IO[bytes]) -> None:
    """Writes the document for `user_id` to `out`. LookupError if the user does not exist."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            await conn.execute(text("SET TRANSACTION READ ONLY"))
            profile = (await conn.execute(text(_PROFILE_SQL), {"user_id": user_id})).scalar()
            if profile is None:
                raise LookupError("no such user")
            params = {"user_id": user_id, "email": json.loads(profile)["email"]}
            exported_at = json.dumps(datetime.now(UTC).isoformat())
            out.write(
                f'{{"format": "{FORMAT}", "version": {VERSION}, "exported_at": {exported_at},'
                f'\n"profile": {profile}'.encode()
            )
            for name, query in _SECTIONS:
                out.write(f',\n"{name}": '.encode())
                await _array(conn, query, params, out)
            out.write(b',\n"tables": {')
            present = await _present_tables(conn)
            first = True
            for table in TABLES:
                if table.name not in present:
                    continue  # the database lacks it (migrations behind): nothing to export
                out.write(f'{"" if first else ","}\n"{table.name}": '.encode())
                first = False
                query = (
                    f'SELECT row_to_json(t)::text FROM "{table.name}" t '
                    f'WHERE t."{OWNER}" = :user_id ORDER BY t.id'
                )
                await _array(conn, query, params, out)
            out.write(b"\n}}\n")


async def _present_tables(conn: AsyncConnection) -> set[str]:
    rows = await conn.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    )
    return set(rows.scalars())


async def _array(conn: AsyncConnection, query: str, params: dict[str, Any], out: IO[bytes]) -> None:
    """A JSON array of the rows `query` returns (one JSON text each), fetched in batches."""
    first = True
    out.write(b"[")
    result = await conn.stream(text(query).execution_options(yield_per=_BATCH), params)
    async for partition in result.partitions(_BATCH):
        parts = [row[0].encode() for row in partition]
        out.write((b"\n" if first else b",\n") + b",\n".join(parts))
        first = False
    out.write(b"]")


def spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, mode="w+b")


async def chunks(document: IO[bytes]) -> AsyncIterator[bytes]:
    """The written document from its start, closed (and its file removed) at the end or when
    the client goes away."""
    try:
        document.seek(0)
        while chunk := document.read(_CHUNK):
            yield chunk
    finally:
        document.close()
