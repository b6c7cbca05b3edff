"""Bucket storage in the service's own PostgreSQL schema (default `powersync_dev`).

Tables:
- `state`: one row; the last op id handed out (one global sequence), the source LSN that
  replication has fully processed, the sync-config hash and version.
- `ops`: the operation log, one row per op, keyed by (bucket, op_id).
- `buckets`: running 32-bit checksum and op count per bucket, updated in the same transaction
  as the ops, so a checkpoint is one consistent read.
- `current_data`: per source row (keyed by its subkey) the buckets it is in and its last
  full row, to emit REMOVEs when a row leaves a bucket and to fill unchanged TOAST values.
- `write_checkpoints`: per (user id, client id) counter plus the source LSN it requires.

The replicator is the only writer of ops; every transaction it commits ends with a NOTIFY so
that sync streams (in this or another process) wake up without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import sql

from papyrus.devsync.checksums import add_checksums, put_checksum, remove_checksum
from papyrus.devsync.sync_rules import EvaluatedRow, SyncConfig
from papyrus.devsync.values import SqliteValue

log = logging.getLogger(__name__)

_NOTIFY_PAYLOAD_LIMIT = 7000
KEEPALIVE_PREFIX = "powersync"
KEEPALIVE_CONTENT = "ping"

_SCHEMA_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.state (
    id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    last_op_id bigint NOT NULL DEFAULT 0,
    lsn pg_lsn,
    config_hash text,
    config_version integer NOT NULL DEFAULT 0,
    snapshot_done boolean NOT NULL DEFAULT false
);
INSERT INTO {schema}.state (id) VALUES (1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS {schema}.source_tables (
    schema_name text NOT NULL,
    table_name text NOT NULL,
    id uuid NOT NULL,
    PRIMARY KEY (schema_name, table_name)
);
CREATE TABLE IF NOT EXISTS {schema}.ops (
    bucket text NOT NULL,
    op_id bigint NOT NULL,
    op text NOT NULL,
    object_type text,
    object_id text,
    subkey text,
    data text,
    checksum bigint NOT NULL,
    target_op bigint,
    PRIMARY KEY (bucket, op_id)
);
CREATE TABLE IF NOT EXISTS {schema}.buckets (
    bucket text PRIMARY KEY,
    checksum bigint NOT NULL,
    count bigint NOT NULL,
    last_op bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.current_data (
    subkey text PRIMARY KEY,
    source_table uuid NOT NULL,
    buckets text NOT NULL,
    row_data text NOT NULL
);
CREATE INDEX IF NOT EXISTS current_data_source_table ON {schema}.current_data (source_table);
CREATE TABLE IF NOT EXISTS {schema}.write_checkpoints (
    user_id text NOT NULL,
    client_id text NOT NULL,
    write_checkpoint bigint NOT NULL,
    lsn pg_lsn NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
"""


def notify_channel(schema: str) -> str:
    return f"{schema}_checkpoint"


def lsn_to_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass
class State:
    last_op_id: int
    lsn: int | None
    config_hash: str | None
    config_version: int
    snapshot_done: bool


@dataclass
class RowChange:
    """A decoded row change, ready to become ops.

    `before_subkey` is set when the row's identity before the change differs from after it
    (delete, or an update that changed the key); `row` is the new row for inserts and updates,
    with unchanged TOAST columns listed in `toasted`.
    """

    kind: Literal["insert", "update", "delete"]
    schema: str
    table: str
    source_table_id: str
    before_subkey: str | None
    after_subkey: str | None
    row: dict[str, SqliteValue] | None
    toasted: tuple[str, ...] = ()


@dataclass
class _Current:
    buckets: list[list[str]]  # [bucket, object_type, object_id]
    row: dict[str, SqliteValue] | None = None
    row_text: str | None = None

    def full_row(self) -> dict[str, SqliteValue]:
        if self.row is None:
            self.row = json.loads(self.row_text) if self.row_text else {}
        return self.row


@dataclass
class BatchResult:
    ops: int
    buckets: set[str] = field(default_factory=set)


class StorageWriter:
    """Synchronous writer used by the replication thread (the single writer of ops)."""

    def __init__(self, conninfo: str, schema: str) -> None:
        self.schema = schema
        self.conn = psycopg.connect(conninfo, autocommit=False)
        self._s = sql.Identifier(schema)
        self.next_op_id = 0
        self._txn_buckets: set[str] = set()

    def close(self) -> None:
        self.conn.close()

    def q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    def ensure_schema(self) -> None:
        with self.conn.transaction():
            self.conn.execute(sql.SQL(_SCHEMA_DDL.replace("{schema}", "{s}")).format(s=self._s))

    def load_state(self) -> State:
        row = self.conn.execute(
            self.q(
                "SELECT last_op_id, lsn::text, config_hash, config_version, snapshot_done"
                " FROM {s}.state"
            )
        ).fetchone()
        self.conn.commit()
        assert row is not None
        lsn = lsn_to_int(row[1]) if row[1] else None
        self.next_op_id = row[0] + 1
        return State(row[0], lsn, row[2], row[3], row[4])

    def reset(self, config_hash: str) -> int:
        """Forget all bucket data before a new snapshot. The op id sequence and the write
        checkpoints are kept so that neither ever goes backwards for a client.

        Returns the config version to use for bucket names. It changes on every reset, so
        clients drop the buckets they hold and download the new ones."""
        with self.conn.transaction():
            state = self.conn.execute(
                self.q("SELECT config_version, config_hash FROM {s}.state FOR UPDATE")
            ).fetchone()
            assert state is not None
            version: int = state[0] + 1
            for table in ("ops", "buckets", "current_data", "source_tables"):
                self.conn.execute(self.q(f"TRUNCATE {{s}}.{table}"))
            self.conn.execute(
                self.q(
                    "UPDATE {s}.state SET config_hash = %s, config_version = %s,"
                    " snapshot_done = false, lsn = NULL"
                ),
                (config_hash, version),
            )
        return version

    def source_table_id(self, schema: str, table: str) -> str:
        """Stable random id of a source table; the first half of every row's subkey."""
        with self.conn.transaction():
            row = self.conn.execute(
                self.q(
                    "INSERT INTO {s}.source_tables (schema_name, table_name, id)"
                    " VALUES (%s, %s, gen_random_uuid()) ON CONFLICT (schema_name, table_name)"
                    " DO UPDATE SET id = {s}.source_tables.id RETURNING id::text"
                ),
                (schema, table),
            ).fetchone()
        assert row is not None
        source_id: str = row[0]
        return source_id

    # -- applying changes ------------------------------------------------------------------

    def apply_changes(
        self, rules: SyncConfig, changes: Sequence[RowChange], lsn: int | None, *, commit: bool
    ) -> BatchResult:
        """Turn changes into ops (set-based) in the open transaction; commit if asked.

        Ops are numbered from one global sequence in the order of the changes. A change emits
        PUTs for the buckets the new row is in, then REMOVEs for buckets it left, the order the
        real service uses."""
        keys = {k for c in changes for k in (c.before_subkey, c.after_subkey) if k}
        current = self._load_current(keys)
        touched: dict[str, str] = {}  # subkey -> source table id
        ops: list[tuple[Any, ...]] = []
        bucket_sums: dict[str, list[int]] = {}
        op_id = self.next_op_id

        def emit(
            bucket: str, op: str, otype: str, oid: str, subkey: str, data: str | None, checksum: int
        ) -> None:
            nonlocal op_id
            ops.append((bucket, op_id, op, otype, oid, subkey, data, checksum))
            agg = bucket_sums.get(bucket)
            if agg is None:
                bucket_sums[bucket] = [checksum, 1, op_id]
            else:
                agg[0] = add_checksums(agg[0], checksum)
                agg[1] += 1
                agg[2] = op_id
            op_id += 1

        for change in changes:
            if change.before_subkey and change.before_subkey != change.after_subkey:
                previous = current.get(change.before_subkey)
                if previous is not None:
                    checksum = remove_checksum(change.before_subkey)
                    for bucket, otype, oid in previous.buckets:
                        emit(bucket, "REMOVE", otype, oid, change.before_subkey, None, checksum)
                current[change.before_subkey] = None
                touched[change.before_subkey] = change.source_table_id
            if change.after_subkey is None or change.row is None:
                continue
            subkey = change.after_subkey
            previous = current.get(subkey)
            row = change.row
            if change.toasted:
                base = previous.full_row() if previous is not None else {}
                row = dict(row)
                for column in change.toasted:
                    row[column] = base.get(column)
            evaluated: list[EvaluatedRow] = rules.evaluate(change.schema, change.table, row)
            new_entries = []
            for ev in evaluated:
                checksum = put_checksum(ev.object_type, ev.object_id, ev.data)
                emit(ev.bucket, "PUT", ev.object_type, ev.object_id, subkey, ev.data, checksum)
                new_entries.append([ev.bucket, ev.object_type, ev.object_id])
            if previous is not None and previous.buckets:
                keep = {tuple(e) for e in new_entries}
                checksum = remove_checksum(subkey)
                for bucket, otype, oid in previous.buckets:
                    if (bucket, otype, oid) not in keep:
                        emit(bucket, "REMOVE", otype, oid, subkey, None, checksum)
            current[subkey] = _Current(new_entries, row=row)
            touched[subkey] = change.source_table_id

        self._write(ops, bucket_sums, current, touched)
        self.next_op_id = op_id
        self._finish(lsn, set(bucket_sums), commit=commit)
        return BatchResult(len(ops), set(bucket_sums))

    def truncate_tables(
        self, source_table_ids: Iterable[str], lsn: int | None, *, commit: bool
    ) -> BatchResult:
        """TRUNCATE: every row of those tables leaves every bucket it was in."""
        rows = self.conn.execute(
            self.q(
                "SELECT subkey, buckets FROM {s}.current_data"
                " WHERE source_table = ANY(%s::uuid[]) ORDER BY subkey"
            ),
            (list(source_table_ids),),
        ).fetchall()
        ops: list[tuple[Any, ...]] = []
        sums: dict[str, list[int]] = {}
        op_id = self.next_op_id
        for subkey, buckets in rows:
            checksum = remove_checksum(subkey)
            for bucket, otype, oid in json.loads(buckets):
                ops.append((bucket, op_id, "REMOVE", otype, oid, subkey, None, checksum))
                agg = sums.setdefault(bucket, [0, 0, 0])
                agg[0] = add_checksums(agg[0], checksum)
                agg[1] += 1
                agg[2] = op_id
                op_id += 1
        self.conn.execute(
            self.q("DELETE FROM {s}.current_data WHERE source_table = ANY(%s::uuid[])"),
            (list(source_table_ids),),
        )
        self._write(ops, sums, {}, {})
        self.next_op_id = op_id
        self._finish(lsn, set(sums), commit=commit)
        return BatchResult(len(ops), set(sums))

    def advance_lsn(self, lsn: int) -> None:
        """Record that replication passed `lsn` (a keepalive message), for write checkpoints."""
        self._finish(lsn, set(), commit=True, message=True)

    def commit(self) -> None:
        self.conn.commit()

    def rollback_if_open(self) -> None:
        self._txn_buckets.clear()
        self.conn.rollback()

    def _load_current(self, keys: set[str]) -> dict[str, _Current | None]:
        if not keys:
            return {}
        rows = self.conn.execute(
            self.q("SELECT subkey, buckets, row_data FROM {s}.current_data WHERE subkey = ANY(%s)"),
            (list(keys),),
        ).fetchall()
        return {subkey: _Current(json.loads(b), row_text=r) for subkey, b, r in rows}

    def _write(
        self,
        ops: list[tuple[Any, ...]],
        bucket_sums: dict[str, list[int]],
        current: dict[str, _Current | None],
        touched: dict[str, str],
    ) -> None:
        cur = self.conn.cursor()
        if ops:
            with cur.copy(
                self.q(
                    "COPY {s}.ops (bucket, op_id, op, object_type, object_id, subkey, data,"
                    " checksum) FROM STDIN"
                )
            ) as copy:
                for op in ops:
                    copy.write_row(op)
        if bucket_sums:
            names = list(bucket_sums)
            cur.execute(
                self.q(
                    "INSERT INTO {s}.buckets AS b (bucket, checksum, count, last_op)"
                    " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bigint[])"
                    " ON CONFLICT (bucket) DO UPDATE SET"
                    " checksum = mod(b.checksum + excluded.checksum, 4294967296),"
                    " count = b.count + excluded.count, last_op = excluded.last_op"
                ),
                (
                    names,
                    [bucket_sums[n][0] for n in names],
                    [bucket_sums[n][1] for n in names],
                    [bucket_sums[n][2] for n in names],
                ),
            )
        if touched:
            cur.execute(
                self.q("DELETE FROM {s}.current_data WHERE subkey = ANY(%s)"), (list(touched),)
            )
            with cur.copy(
                self.q("COPY {s}.current_data (subkey, source_table, buckets, row_data) FROM STDIN")
            ) as copy:
                for subkey, table_id in touched.items():
                    entry = current.get(subkey)
                    if entry is not None:
                        copy.write_row(
                            (subkey, table_id, _compact(entry.buckets), _compact(entry.full_row()))
                        )

    def _finish(
        self, lsn: int | None, buckets: set[str], *, commit: bool, message: bool = False
    ) -> None:
        self.conn.execute(
            self.q("UPDATE {s}.state SET last_op_id = %s, lsn = COALESCE(%s::pg_lsn, lsn)"),
            (self.next_op_id - 1, int_to_lsn(lsn) if lsn is not None else None),
        )
        self._txn_buckets.update(buckets)
        if commit:
            self.notify(self._txn_buckets, message=message)
            self._txn_buckets = set()
            self.conn.commit()

    def notify(self, buckets: set[str] | None, *, message: bool = False) -> None:
        """Queue a NOTIFY (sent on commit) listing the changed buckets, or all (null)."""
        payload: dict[str, Any] = {"op": self.next_op_id - 1, "message": message}
        names = sorted(buckets) if buckets is not None else None
        payload["buckets"] = names
        text = json.dumps(payload, ensure_ascii=False)
        if len(text.encode()) > _NOTIFY_PAYLOAD_LIMIT:
            payload["buckets"] = None
            text = json.dumps(payload)
        self.conn.execute("SELECT pg_notify(%s, %s)", (notify_channel(self.schema), text))

    def mark_snapshot_done(self, lsn: int) -> None:
        """Commit the snapshot's ops together with the position streaming starts from."""
        self._txn_buckets = set()
        self.conn.execute(
            self.q("UPDATE {s}.state SET snapshot_done = true, lsn = %s::pg_lsn"),
            (int_to_lsn(lsn),),
        )
        self.notify(None)
        self.conn.commit()

    # -- compaction ------------------------------------------------------------------------

    def compact(self, buckets: Iterable[str] | None = None) -> int:
        """Compact buckets without changing their checksums.

        Superseded PUT/REMOVE ops (a later op exists for the same row in the bucket) become
        MOVE ops without data; then a bucket's leading run of ops that hold no live row is
        merged into one CLEAR op carrying their summed checksum. `target_op` records the op
        that superseded them, so a stream reading an older checkpoint can tell that its view
        was compacted and start a new checkpoint instead of completing a stale one.

        Returns the number of op rows removed."""
        names = sorted(set(buckets)) if buckets is not None else None
        where = "" if names is None else " AND bucket = ANY(%(b)s)"
        params = {"b": names} if names is not None else None
        with self.conn.transaction():
            self.conn.execute(
                self.q(
                    "WITH s AS (SELECT bucket, op_id, lead(op_id) OVER (PARTITION BY"
                    " bucket, object_type, object_id, subkey ORDER BY op_id) AS next_op"
                    " FROM {s}.ops WHERE op IN ('PUT', 'REMOVE')" + where + ")"
                    " UPDATE {s}.ops o SET op = 'MOVE', data = NULL, target_op = s.next_op"
                    " FROM s WHERE o.bucket = s.bucket AND o.op_id = s.op_id"
                    " AND s.next_op IS NOT NULL"
                ),
                params,
            )
            self.conn.execute(
                self.q(
                    "CREATE TEMP TABLE IF NOT EXISTS devsync_clear (bucket text, last_op bigint,"
                    " checksum bigint, target_op bigint, n bigint) ON COMMIT DROP"
                )
            )
            self.conn.execute(
                self.q(
                    "INSERT INTO devsync_clear SELECT o.bucket, max(o.op_id),"
                    " mod(sum(o.checksum), 4294967296), max(o.target_op), count(*)"
                    " FROM {s}.ops o LEFT JOIN (SELECT bucket, min(op_id) AS first_put"
                    " FROM {s}.ops WHERE op = 'PUT'" + where + " GROUP BY bucket) f"
                    " ON f.bucket = o.bucket"
                    " WHERE (f.first_put IS NULL OR o.op_id < f.first_put)"
                    + where.replace("bucket", "o.bucket")
                    + " GROUP BY o.bucket HAVING count(*) > 1"
                ),
                params,
            )
            deleted = self.conn.execute(
                self.q(
                    "DELETE FROM {s}.ops o USING devsync_clear c"
                    " WHERE o.bucket = c.bucket AND o.op_id <= c.last_op"
                )
            ).rowcount
            inserted = self.conn.execute(
                self.q(
                    "INSERT INTO {s}.ops (bucket, op_id, op, checksum, target_op)"
                    " SELECT bucket, last_op, 'CLEAR', checksum, target_op FROM devsync_clear"
                )
            ).rowcount
            self.conn.execute(
                self.q(
                    "UPDATE {s}.buckets b SET count = b.count - c.n + 1"
                    " FROM devsync_clear c WHERE b.bucket = c.bucket"
                )
            )
        return deleted - inserted


def _blob(value: Any) -> Any:
    if isinstance(value, bytes):
        return None
    raise TypeError(type(value).__name__)


_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_blob).encode


# ---------------------------------------------------------------------------------------------
# Reading (async, used by the HTTP layer)


@dataclass(frozen=True)
class BucketChecksum:
    checksum: int  # unsigned 32-bit
    count: int


@dataclass(frozen=True)
class Checkpoint:
    last_op_id: int
    lsn: int | None
    buckets: dict[str, BucketChecksum]
    last_ops: dict[str, int]  # newest op id per bucket, to skip buckets with nothing new
    write_checkpoint: int | None


@dataclass(frozen=True)
class OpRow:
    op_id: int
    op: str
    object_type: str | None
    object_id: str | None
    subkey: str | None
    data: str | None
    checksum: int
    target_op: int | None


class AsyncPool:
    """A small pool of async connections (psycopg_pool is not a dependency)."""

    def __init__(self, conninfo: str, max_size: int = 10) -> None:
        self.conninfo = conninfo
        self.max_size = max_size
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._size = 0
        self._available = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await self._acquire()
        try:
            yield conn
        except BaseException:
            await conn.close()
            async with self._available:
                self._size -= 1
                self._available.notify()
            raise
        else:
            async with self._available:
                self._idle.append(conn)
                self._available.notify()

    async def _acquire(self) -> psycopg.AsyncConnection[Any]:
        async with self._available:
            while True:
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed:
                        return conn
                    self._size -= 1
                if self._size < self.max_size:
                    self._size += 1
                    break
                await self._available.wait()
        try:
            return await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        except BaseException:
            async with self._available:
                self._size -= 1
                self._available.notify()
            raise

    async def close(self) -> None:
        async with self._available:
            idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


class StorageReader:
    """Async reads for sync streams and write checkpoints."""

    def __init__(self, pool: AsyncPool, schema: str) -> None:
        self.pool = pool
        self._s = sql.Identifier(schema)

    def q(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(s=self._s)

    async def checkpoint(self, buckets: list[str], user_id: str, client_id: str) -> Checkpoint:
        """State, bucket checksums and the visible write checkpoint, from one snapshot."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                self.q(
                    "SELECT s.last_op_id, s.lsn::text,"
                    " (SELECT w.write_checkpoint FROM {s}.write_checkpoints w"
                    "   WHERE w.user_id = %s AND w.client_id = %s AND w.lsn <= s.lsn),"
                    " (SELECT coalesce(json_agg(json_build_array(b.bucket, b.checksum, b.count,"
                    " b.last_op)),"
                    "   '[]'::json)::text FROM {s}.buckets b WHERE b.bucket = ANY(%s))"
                    " FROM {s}.state s"
                ),
                (user_id, client_id, buckets),
            )
            row = await cur.fetchone()
        assert row is not None
        entries = json.loads(row[3])
        sums = {name: BucketChecksum(checksum, count) for name, checksum, count, _ in entries}
        last_ops = {name: last_op for name, _, _, last_op in entries}
        lsn = lsn_to_int(row[1]) if row[1] else None
        return Checkpoint(row[0], lsn, sums, last_ops, row[2])

    async def ops(self, bucket: str, after: int, up_to: int, limit: int) -> list[OpRow]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                self.q(
                    "SELECT op_id, op, object_type, object_id, subkey, data, checksum, target_op"
                    " FROM {s}.ops WHERE bucket = %s AND op_id > %s AND op_id <= %s"
                    " ORDER BY op_id LIMIT %s"
                ),
                (bucket, after, up_to, limit),
            )
            rows = await cur.fetchall()
        return [OpRow(*r) for r in rows]

    async def create_write_checkpoint(self, user_id: str, client_id: str) -> int:
        """Next write checkpoint for (user, client), bound to the current WAL position.

        The logical message afterwards guarantees replication passes that position even if
        the client's upload changed nothing in published tables. The insert position (not
        the service's `pg_current_wal_lsn()`, the write position) is used because with
        `synchronous_commit = off` a just-committed upload can lie beyond the write position."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    self.q(
                        "INSERT INTO {s}.write_checkpoints"
                        " (user_id, client_id, write_checkpoint, lsn)"
                        " VALUES (%s, %s, 1, pg_current_wal_insert_lsn())"
                        " ON CONFLICT (user_id, client_id) DO UPDATE SET"
                        " write_checkpoint = {s}.write_checkpoints.write_checkpoint + 1,"
                        " lsn = excluded.lsn RETURNING write_checkpoint"
                    ),
                    (user_id, client_id),
                )
                row = await cur.fetchone()
            await conn.execute(
                "SELECT pg_logical_emit_message(false, %s, %s)",
                (KEEPALIVE_PREFIX, KEEPALIVE_CONTENT),
            )
        assert row is not None
        return int(row[0])
