"""Change capture: logical decoding (pgoutput) from the `powersync` publication.

The service owns one logical replication slot. pgoutput (protocol 1) sends each transaction
only once it has committed, in commit order, so every Begin..Commit run becomes one storage
transaction of ops. The slot's position is acknowledged only after that storage transaction
commits; after a crash the slot resends what was not acknowledged and transactions whose
commit LSN is below the stored LSN are skipped, so nothing is lost or applied twice.

On a database it has not seen (or after the sync config changed, or the slot disappeared),
the service creates the slot with an exported snapshot, copies every published table the
sync config reads inside that snapshot, then streams from the slot's consistent point: the
snapshot and the stream meet exactly.

The publication is never created or altered here; that belongs to the schema migrations.

Replica identity: the default (primary key) is enough and is what we recommend for `books`.
Like the real service, the service keeps each row's bucket membership (and last full row) in
its own `current_data` table, so an owner change or a delete needs only the key from the WAL
to emit REMOVEs for the buckets the row was in, and unchanged TOAST values are filled in from
the stored row. The row's subkey is derived from the replica-identity columns exactly as the
service derives it, so with REPLICA IDENTITY FULL every update would change the subkey (a
REMOVE plus a PUT per update on the client), which is why FULL is not recommended. NOTHING
cannot replicate deletes at all.
"""

from __future__ import annotations

import contextlib
import logging
import select
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg import sql

from papyrus.devsync.storage import (
    KEEPALIVE_PREFIX,
    RowChange,
    StorageWriter,
    int_to_lsn,
    lsn_to_int,
)
from papyrus.devsync.sync_rules import SyncConfig
from papyrus.devsync.values import SqliteValue, decoder_for, row_subkey

log = logging.getLogger(__name__)

TOAST = object()
"""Marks a column whose unchanged TOASTed value pgoutput did not send."""

_BATCH_CHANGES = 10_000
_SESSION_OPTIONS = "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres"


class ReplicationError(RuntimeError):
    """The source database is not set up for replication as the service needs."""


@dataclass
class Column:
    name: str
    type_oid: int
    is_key: bool
    decoder: Callable[[str], SqliteValue] | None = None


@dataclass
class Relation:
    relid: int
    schema: str
    name: str
    replica_identity: str
    columns: list[Column]
    source_table_id: str | None = None
    key_columns: list[str] = field(default_factory=list)

    def decode(self, values: list[Any]) -> tuple[dict[str, SqliteValue], tuple[str, ...]]:
        row: dict[str, SqliteValue] = {}
        toasted: list[str] = []
        for column, value in zip(self.columns, values, strict=False):
            if value is TOAST:
                toasted.append(column.name)
            elif value is None or column.decoder is None:
                row[column.name] = value
            else:
                row[column.name] = column.decoder(value)
        return row, tuple(toasted)

    def subkey(self, row: dict[str, SqliteValue]) -> str:
        assert self.source_table_id is not None
        if not self.key_columns:
            return f"{self.source_table_id}/{uuid.uuid4()}"  # REPLICA IDENTITY NOTHING
        return row_subkey(self.source_table_id, {k: row.get(k) for k in self.key_columns})


# ---------------------------------------------------------------------------------------------
# pgoutput protocol 1


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


_INT32 = struct.Struct(">i").unpack_from
_INT16 = struct.Struct(">h").unpack_from


def _tuple(buf: bytes, pos: int) -> tuple[list[Any], int]:
    (count,) = _INT16(buf, pos)
    pos += 2
    values: list[Any] = []
    append = values.append
    for _ in range(count):
        kind = buf[pos]
        if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary (not requested)
            (length,) = _INT32(buf, pos + 1)
            pos += 5
            append(buf[pos : pos + length].decode())
            pos += length
            continue
        pos += 1
        if kind == 0x6E:  # 'n' null
            append(None)
        else:  # 'u' unchanged TOAST
            append(TOAST)
    return values, pos


@dataclass
class Begin:
    final_lsn: int
    xid: int


@dataclass
class Commit:
    commit_lsn: int
    end_lsn: int


ChangeKind = Literal["insert", "update", "delete"]
_CHANGE_KINDS: dict[int, ChangeKind] = {0x49: "insert", 0x55: "update", 0x44: "delete"}


@dataclass
class Change:
    kind: ChangeKind
    relid: int
    old: list[Any] | None
    new: list[Any] | None


@dataclass
class Truncate:
    relids: list[int]


@dataclass
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


def decode_message(buf: bytes) -> Any:
    """One pgoutput message to a small dataclass (Relation, Begin, Commit, Change, ...)."""
    tag = buf[0]
    if tag == 0x42:  # B
        final_lsn, _ts, xid = struct.unpack_from(">QqI", buf, 1)
        return Begin(final_lsn, xid)
    if tag == 0x43:  # C
        _flags, commit_lsn, end_lsn, _ts = struct.unpack_from(">bQQq", buf, 1)
        return Commit(commit_lsn, end_lsn)
    if tag in (0x49, 0x55, 0x44):  # I U D
        (relid,) = struct.unpack_from(">I", buf, 1)
        pos = 5
        old = new = None
        if buf[pos] in (0x4B, 0x4F):  # K / O
            old, pos = _tuple(buf, pos + 1)
        if pos < len(buf) and buf[pos] == 0x4E:  # N
            new, pos = _tuple(buf, pos + 1)
        return Change(_CHANGE_KINDS[tag], relid, old, new)
    if tag == 0x52:  # R
        (relid,) = struct.unpack_from(">I", buf, 1)
        namespace, pos = _cstring(buf, 5)
        name, pos = _cstring(buf, pos)
        identity = chr(buf[pos])
        (ncols,) = struct.unpack_from(">h", buf, pos + 1)
        pos += 3
        columns = []
        for _ in range(ncols):
            flags = buf[pos]
            col_name, pos = _cstring(buf, pos + 1)
            type_oid, _typmod = struct.unpack_from(">Ii", buf, pos)
            pos += 8
            columns.append(Column(col_name, type_oid, bool(flags & 1), decoder_for(type_oid)))
        return Relation(relid, namespace or "pg_catalog", name, identity, columns)
    if tag == 0x54:  # T
        (nrels,) = struct.unpack_from(">I", buf, 1)
        relids = list(struct.unpack_from(f">{nrels}I", buf, 6))
        return Truncate(relids)
    if tag == 0x4D:  # M
        flags, lsn = struct.unpack_from(">bQ", buf, 1)
        prefix, pos = _cstring(buf, 10)
        (length,) = struct.unpack_from(">I", buf, pos)
        return Message(bool(flags & 1), lsn, prefix, bytes(buf[pos + 4 : pos + 4 + length]))
    return None  # Type, Origin: nothing to do


# ---------------------------------------------------------------------------------------------


@dataclass
class ReplicationStatus:
    """What the probes report."""

    started: bool = False
    ready: bool = False
    touched_at: float = field(default_factory=time.time)
    error: str | None = None


class Replicator:
    """Runs snapshot + streaming replication on a background thread."""

    def __init__(
        self,
        conninfo: str,
        rules: SyncConfig,
        *,
        schema: str = "powersync_dev",
        slot_name: str = "powersync_dev",
        publication: str = "powersync",
        compact_every_ops: int = 50_000,
        compact_interval: float = 300.0,
    ) -> None:
        self.conninfo = conninfo
        self.rules = rules
        self.schema = schema
        self.slot_name = slot_name
        self.publication = publication
        self.compact_every_ops = compact_every_ops
        self.compact_interval = compact_interval
        self.status = ReplicationStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._relations: dict[int, Relation] = {}
        self._table_ids: dict[tuple[str, str], str] = {}
        self._dirty: set[str] = set()
        self._ops_since_compact = 0
        self._last_compact = time.monotonic()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_forever, name="devsync-replication")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run_forever(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            try:
                self.run_once()
                delay = 0.5
            except ReplicationError as exc:
                self.status.error = str(exc)
                log.error("replication cannot start: %s", exc)
                self._stop.wait(5.0)
            except Exception as exc:
                self.status.error = f"{type(exc).__name__}: {exc}"
                log.exception("replication failed; retrying in %.1fs", delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def run_once(self) -> None:
        """Snapshot if needed, then stream until stopped (or an error is raised)."""
        writer = StorageWriter(self.conninfo, self.schema)
        repl = psycopg2.connect(
            self.conninfo,
            connection_factory=psycopg2.extras.LogicalReplicationConnection,
            options=_SESSION_OPTIONS,
        )
        try:
            writer.ensure_schema()
            self._check_publication()
            cur = repl.cursor()
            state = writer.load_state()
            self.status.started = True
            needs_snapshot = (
                not state.snapshot_done
                or state.config_hash != self.rules.source_hash
                or not self._slot_exists()
            )
            if needs_snapshot:
                start_lsn = self._snapshot(writer, cur)
            else:
                self.rules.set_version(state.config_version)
                start_lsn = state.lsn or 0
                self._load_table_ids(writer)
            self.status.ready = True
            self.status.error = None
            self._stream(writer, cur, start_lsn)
        finally:
            self.status.ready = False
            with contextlib.suppress(Exception):
                repl.close()
            with contextlib.suppress(Exception):
                writer.close()

    # -- setup -----------------------------------------------------------------------------

    def _check_publication(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            pub = conn.execute(
                "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication"
                " WHERE pubname = %s",
                (self.publication,),
            ).fetchone()
            if pub is None:
                raise ReplicationError(
                    f"Publication '{self.publication}' does not exist; it is created by the"
                    " database migrations (CREATE PUBLICATION powersync FOR TABLE ...)."
                )
            if not all(pub):
                raise ReplicationError(
                    f"Publication '{self.publication}' does not publish all changes"
                    " (insert, update, delete, truncate)."
                )
            published = {
                (r[0], r[1])
                for r in conn.execute(
                    "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                    (self.publication,),
                )
            }
        for schema, table in sorted(self.rules.tables() - published):
            log.warning(
                "table %s.%s is used by the sync config but is not in publication '%s'",
                schema,
                table,
                self.publication,
            )

    def _slot_exists(self) -> bool:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot_name,)
            ).fetchone()
        return row is not None

    def _drop_slot(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s",
                (self.slot_name,),
            )

    def _load_table_ids(self, writer: StorageWriter) -> None:
        self._table_ids = {t: writer.source_table_id(*t) for t in self.rules.tables()}

    def _snapshot(self, writer: StorageWriter, cur: Any) -> int:
        """(Re)create the slot and copy the current rows of every synced table."""
        self._drop_slot()
        version = writer.reset(self.rules.source_hash)
        self.rules.set_version(version)
        self._load_table_ids(writer)
        cur.execute(
            f"CREATE_REPLICATION_SLOT {psycopg2.extensions.quote_ident(self.slot_name, cur)}"
            " LOGICAL pgoutput (SNAPSHOT 'export')"
        )
        _slot, consistent_point, snapshot_name, _plugin = cur.fetchone()
        start_lsn = lsn_to_int(consistent_point)
        started = time.monotonic()
        total = 0
        with psycopg.connect(self.conninfo, options=_SESSION_OPTIONS, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
            for schema, table in sorted(self.rules.tables()):
                total += self._snapshot_table(conn, writer, schema, table)
            conn.execute("ROLLBACK")
        # The ops and the "snapshot done" mark commit together: a crash mid-snapshot
        # leaves nothing behind and the next start snapshots again.
        writer.mark_snapshot_done(start_lsn)
        log.info(
            "initial snapshot: %d rows in %.2fs, streaming from %s",
            total,
            time.monotonic() - started,
            int_to_lsn(start_lsn),
        )
        return start_lsn

    def _snapshot_table(
        self, conn: psycopg.Connection[Any], writer: StorageWriter, schema: str, table: str
    ) -> int:
        relation = self._relation_from_catalog(conn, schema, table)
        if relation is None:
            log.warning("table %s.%s does not exist; nothing to snapshot", schema, table)
            return 0
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in relation.columns)
        query = sql.SQL("COPY (SELECT {} FROM {}.{}) TO STDOUT").format(
            names, sql.Identifier(schema), sql.Identifier(table)
        )
        batch: list[RowChange] = []
        count = 0
        with conn.cursor().copy(query) as copy:
            for values in copy.rows():
                row, _ = relation.decode(list(values))
                batch.append(
                    RowChange(
                        "insert",
                        schema,
                        table,
                        relation.source_table_id or "",
                        None,
                        relation.subkey(row),
                        row,
                    )
                )
                if len(batch) >= _BATCH_CHANGES:
                    writer.apply_changes(self.rules, batch, None, commit=False)
                    count += len(batch)
                    batch = []
        if batch:
            writer.apply_changes(self.rules, batch, None, commit=False)
            count += len(batch)
        return count

    def _relation_from_catalog(
        self, conn: psycopg.Connection[Any], schema: str, table: str
    ) -> Relation | None:
        """Columns and replica identity as pgoutput would describe them."""
        row = conn.execute(
            "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (schema, table),
        ).fetchone()
        if row is None:
            return None
        oid, identity = row[0], row[1]
        if identity == "f":
            key_sql = "true"
        elif identity == "n":
            key_sql = "false"
        else:
            flag = "i.indisprimary" if identity == "d" else "i.indisreplident"
            key_sql = (
                "EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND "
                f"{flag} AND a.attnum = ANY (i.indkey))"
            )
        columns = [
            Column(name, type_oid, is_key, decoder_for(type_oid))
            for name, type_oid, is_key in conn.execute(
                f"SELECT a.attname, a.atttypid::int, {key_sql} FROM pg_attribute a"
                " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (oid,),
            )
        ]
        relation = Relation(oid, schema, table, identity, columns)
        self._prepare(relation)
        return relation

    def _prepare(self, relation: Relation) -> None:
        relation.source_table_id = self._table_ids.get((relation.schema, relation.name))
        relation.key_columns = (
            []
            if relation.replica_identity == "n"
            else [c.name for c in relation.columns if c.is_key]
        )

    # -- streaming -------------------------------------------------------------------------

    def _stream(self, writer: StorageWriter, cur: Any, start_lsn: int) -> None:
        state_lsn = writer.load_state().lsn or start_lsn
        cur.start_replication(
            slot_name=self.slot_name,
            decode=False,
            start_lsn=start_lsn,
            options={
                "proto_version": "1",
                "publication_names": self.publication,
                "messages": "true",
            },
        )
        pending: list[RowChange] = []
        in_txn = False
        skip_txn = False
        flushed = False  # part of the current transaction is already in storage
        acked = start_lsn
        while not self._stop.is_set():
            msg = cur.read_message()
            self.status.touched_at = time.time()
            if msg is None:
                if not in_txn:
                    self._maybe_compact(writer)
                    if cur.wal_end and cur.wal_end > acked:
                        # Everything up to wal_end was decoded and handled; let the slot
                        # release WAL even when only unrelated tables change.
                        acked = cur.wal_end
                        self._acknowledge(cur, acked)
                select.select([cur], [], [], 0.2)
                continue
            message = decode_message(msg.payload)
            if isinstance(message, Begin):
                in_txn, pending, flushed = True, [], False
                skip_txn = message.final_lsn < state_lsn
            elif isinstance(message, Relation):
                self._prepare(message)
                self._relations[message.relid] = message
            elif isinstance(message, Change):
                if not skip_txn:
                    change = self._row_change(message)
                    if change is not None:
                        pending.append(change)
                        if len(pending) >= _BATCH_CHANGES:
                            self._record(
                                writer.apply_changes(self.rules, pending, None, commit=False)
                            )
                            pending, flushed = [], True
            elif isinstance(message, Truncate):
                if not skip_txn:
                    if pending:
                        self._record(writer.apply_changes(self.rules, pending, None, commit=False))
                        pending = []
                    ids = [
                        r.source_table_id
                        for rid in message.relids
                        if (r := self._relations.get(rid)) is not None and r.source_table_id
                    ]
                    if ids:
                        self._record(writer.truncate_tables(ids, None, commit=False))
                        flushed = True
            elif isinstance(message, Commit):
                in_txn = False
                if not skip_txn and (pending or flushed):
                    self._record(
                        writer.apply_changes(self.rules, pending, message.end_lsn, commit=True)
                    )
                    state_lsn = message.end_lsn
                elif not skip_txn:
                    writer.rollback_if_open()
                pending, flushed = [], False
                acked = max(acked, message.end_lsn)
                self._acknowledge(cur, acked)
            elif (
                isinstance(message, Message)
                and not message.transactional
                and message.prefix == KEEPALIVE_PREFIX
            ):
                if message.lsn > state_lsn:
                    writer.advance_lsn(message.lsn)
                    state_lsn = message.lsn
                if not in_txn:
                    acked = max(acked, message.lsn)
                    self._acknowledge(cur, acked)

    def _acknowledge(self, cur: Any, lsn: int) -> None:
        """Tell the slot everything up to `lsn` is stored (only ever after the commit)."""
        cur.send_feedback(flush_lsn=lsn)

    def _record(self, result: Any) -> None:
        self._dirty.update(result.buckets)
        self._ops_since_compact += result.ops

    def _maybe_compact(self, writer: StorageWriter) -> None:
        if not self._dirty:
            return
        due = self._ops_since_compact >= self.compact_every_ops or (
            time.monotonic() - self._last_compact >= self.compact_interval
        )
        if due:
            removed = writer.compact(self._dirty)
            log.info("compacted %d buckets, %d ops removed", len(self._dirty), removed)
            self._dirty.clear()
            self._ops_since_compact = 0
            self._last_compact = time.monotonic()

    def _row_change(self, message: Change) -> RowChange | None:
        relation = self._relations.get(message.relid)
        if relation is None or relation.source_table_id is None:
            return None  # a published table the sync config does not read
        before_subkey = None
        if message.old is not None:
            old_row, _ = relation.decode(message.old)
            before_subkey = relation.subkey(old_row)
        if message.kind == "delete":
            return RowChange(
                "delete",
                relation.schema,
                relation.name,
                relation.source_table_id,
                before_subkey,
                None,
                None,
            )
        assert message.new is not None
        row, toasted = relation.decode(message.new)
        after_subkey = relation.subkey(row)
        return RowChange(
            message.kind,
            relation.schema,
            relation.name,
            relation.source_table_id,
            before_subkey,
            after_subkey,
            row,
            toasted,
        )
