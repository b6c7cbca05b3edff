"""The PowerSync SQLite core extension, loaded into apsw.

This is the only module that names the extension's internal tables (`ps_*`) and SQL functions
(`powersync_*`); everything else talks to `CoreConnection`. Facts relied on here were measured
against core 0.5.3 (see docs/powersync-core-notes.md): every `powersync_*` state function must run
inside an explicit transaction, the local write gate lives in `ps_kv` behind
`powersync_control('target_checkpoint_request_id', ...)`, and `powersync_update_hooks` reports
the tables a committed transaction touched.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw
import apsw.ext

from papyrus.client import limits
from papyrus.client.errors import CoreExtensionError, PapyrusClientError, TransactionTooLargeError

log = logging.getLogger(__name__)

ENTRY_POINT = "sqlite3_powersync_init"
MIN_SQLITE = (3, 44, 0)
# The core this client is built and tested against: the one the pinned `@powersync/node`
# package ships (`const version` in node-sdk/node_modules/@powersync/node/download_core.js).
# The wheel build copies those binaries and refuses a different version; bump both together.
CORE_VERSION = "0.5.3"
_NO_TARGET = "9223372036854775807"  # i64::MAX: "local writes pending, no write checkpoint yet"
# Where the wheel carries the binaries (setup.py copies them there at build time).
_PACKAGED = Path(__file__).resolve().parent / "_native"
# An editable install in this repository's checkout uses node-sdk/ directly.
_CHECKOUT = Path(__file__).resolve().parents[3]
_NODE_LIB = Path("node-sdk") / "node_modules" / "@powersync" / "node" / "lib"
_FIX = (
    "An installed papyrus package carries the extension; in this repository's checkout run "
    "`make setup` (it runs `npm ci` in node-sdk/, which installs the pinned @powersync/node "
    "package that ships it). Or set POWERSYNC_CORE_PATH to a libpowersync "
    f"{CORE_VERSION} build for this platform."
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Params = tuple[Any, ...] | dict[str, Any]
Row = dict[str, Any]

ChangeListener = Callable[[frozenset[str], bool], None]
"""Called after a commit with the user-visible tables that changed and whether the upload
queue changed."""

_BEFORE = "temp.papyrus_before"  # rows as the open write transaction found them


@dataclass(frozen=True)
class TransactionWrites:
    """What the open write transaction queued for upload, for a check before COMMIT:
    `entries` (the core's CRUD JSON, `{"op", "type", "id", "data"?}`), `query` to read the
    database as the transaction left it, and `previous` for the rows of the tables given to
    `set_write_check` as the transaction found them (None: the row did not exist)."""

    entries: list[dict[str, Any]]
    query: Callable[[str, tuple[Any, ...]], list[dict[str, Any]]]
    previous: Callable[[str, str], dict[str, Any] | None]


WriteCheck = Callable[[TransactionWrites], None]


def _binary_name() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine)
    if sys.platform.startswith("linux") and arch:
        return f"libpowersync_{arch}.linux.so"
    if sys.platform == "darwin" and arch:
        return f"libpowersync_{arch}.macos.dylib"
    raise CoreExtensionError(
        f"No bundled PowerSync core extension for {sys.platform}/{machine}. "
        "Set POWERSYNC_CORE_PATH to a libpowersync build for this platform."
    )


def locate_core_extension(override: str | os.PathLike[str] | None = None) -> Path:
    """The core extension binary: `override`, then `POWERSYNC_CORE_PATH` (an explicit choice
    wins), then the one packaged with this module, then the checkout's `node-sdk/`."""
    explicit = override or os.environ.get("POWERSYNC_CORE_PATH")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise CoreExtensionError(
                f"POWERSYNC_CORE_PATH points at {path}, which is not a file. "
                "Point it at libpowersync (.so/.dylib) or unset it to use the bundled one."
            )
        return path
    name = _binary_name()
    candidates = [_PACKAGED / name, _CHECKOUT / _NODE_LIB / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(map(str, candidates))
    raise CoreExtensionError(
        f"The PowerSync core extension was not found (looked in {searched}). {_FIX}"
    )


def core_version(conn: apsw.Connection) -> str:
    return cast(str, conn.execute("SELECT powersync_rs_version()").fetchall()[0][0])


def load_core_extension(conn: apsw.Connection, path: Path) -> str:
    """Loads the extension into `conn` and checks versions; returns the core's version."""
    if (
        apsw.sqlite_lib_version().split(".")
        and tuple(int(p) for p in apsw.sqlite_lib_version().split(".")[:3]) < MIN_SQLITE
    ):
        raise CoreExtensionError(
            f"SQLite {apsw.sqlite_lib_version()} is too old for the PowerSync core "
            "extension (needs 3.44 or newer); upgrade the apsw package."
        )
    conn.enable_load_extension(True)
    try:
        conn.load_extension(str(path), ENTRY_POINT)
    except apsw.Error as exc:
        raise CoreExtensionError(
            f"Could not load the PowerSync core extension from {path}: {exc}. "
            f"It may be a build for another platform or a damaged file. {_FIX}"
        ) from None
    finally:
        conn.enable_load_extension(False)
    version = core_version(conn)
    if version.split("/")[0] != CORE_VERSION:
        raise CoreExtensionError(
            f"The PowerSync core extension at {path} is version {version}; this client is "
            f"pinned to {CORE_VERSION}, the version it is built and tested against. {_FIX}"
        )
    return version


@dataclass(frozen=True)
class CrudRow:
    """One row of the upload queue: `id` orders and completes it, `tx_id` groups it."""

    id: int
    tx_id: int | None
    data: dict[str, Any]


def _size(size: int) -> str:
    return f"{size:,} bytes ({size / (1024 * 1024):.1f} MiB)"


def _visible_table(internal: str) -> str | None:
    for prefix in ("ps_data_local__", "ps_data__"):
        if internal.startswith(prefix):
            return internal[len(prefix) :]
    if internal.startswith("ps_") or internal.startswith("sqlite_"):
        return None
    return internal


class CoreConnection:
    """One apsw connection with the core extension loaded, shared by app code and the sync loop.

    The sync state machine lives on the connection, so the sync loop and local writes use this
    one connection, serialised by `lock`. After every commit, listeners learn which tables
    changed (from the core's update hooks), which is what `watch()` and the upload loop need.
    """

    def __init__(self, path: str | os.PathLike[str], extension: Path | None = None) -> None:
        self.path = str(path)
        self.extension = extension or locate_core_extension()
        self.lock = threading.RLock()
        self._depth = 0
        self._queue_ready = False  # ps_crud exists once powersync_init() has run
        self._reading = False  # inside read(): writes are refused
        self._listeners: list[ChangeListener] = []
        self._data_version: int | None = None  # last PRAGMA data_version seen by the poller
        self._crud_mark: tuple[int | None, int] | None = None
        self._write_check: WriteCheck | None = None
        self._conn = apsw.Connection(self.path)
        try:
            self.version = load_core_extension(self._conn, self.extension)
            self._conn.set_busy_timeout(5000)
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL").fetchall()
                self._conn.execute("PRAGMA synchronous=NORMAL").fetchall()
            with self.write():
                self._scalar("SELECT powersync_init()")
            self._queue_ready = True
            self._scalar("SELECT powersync_update_hooks('install')")
        except BaseException:
            self._conn.close()
            raise

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    def add_listener(self, listener: ChangeListener) -> Callable[[], None]:
        with self.lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self.lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self._conn.execute(sql, params).fetchall()
        return rows[0][0] if rows else None

    @contextmanager
    def write(self) -> Iterator[CoreConnection]:
        """A write transaction (`BEGIN IMMEDIATE`); nested calls join the outer one.

        Before COMMIT, what the transaction queued for upload is checked against the server's
        limits (`TransactionTooLargeError`, after a rollback): a transaction the server could
        never take whole is refused now, while the caller can still act on it."""
        with self.lock:
            if self._reading:
                raise PapyrusClientError("cannot write inside read_transaction()")
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                queued_before = self._last_crud_id() if self._queue_ready else None
                check = self._write_check
                if check is not None:
                    self._conn.execute(f"DELETE FROM {_BEFORE}")
                yield self
                if queued_before is not None:
                    queued = self._check_upload_limits(queued_before)
                    if check is not None and queued:
                        self._run_write_check(check, queued_before)
            except BaseException:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")
            changed = json.loads(self._scalar("SELECT powersync_update_hooks('get')") or "[]")
            listeners = list(self._listeners)
        if changed:
            self._notify(changed, listeners)

    def _last_crud_id(self) -> int:
        last: int = self._scalar("SELECT ifnull(max(id), 0) FROM ps_crud")
        return last

    def _check_upload_limits(self, queued_before: int) -> int:
        """The core gives each SQLite transaction one tx_id, and ps_crud ids only grow: this
        transaction's queued changes are exactly the rows after `queued_before`. Returns how
        many there are."""
        count, size, largest = cast(
            tuple[int, int, int],
            self._conn.execute(
                "SELECT count(*), ifnull(sum(length(CAST(data AS BLOB))), 0),"
                " ifnull(max(length(CAST(data AS BLOB))), 0) FROM ps_crud WHERE id > ?",
                (queued_before,),
            ).fetchall()[0],
        )
        if not count:
            return 0
        size += count * limits.ENTRY_OVERHEAD
        largest += limits.ENTRY_OVERHEAD
        if count > limits.MAX_TRANSACTION_OPERATIONS or size > limits.MAX_QUEUED_BYTES:
            raise TransactionTooLargeError(
                f"This transaction queues {count:,} changes, {_size(size)} to upload; one "
                f"transaction uploads at most {limits.MAX_TRANSACTION_OPERATIONS:,} changes and "
                f"{_size(limits.MAX_QUEUED_BYTES)}. It was rolled back: nothing of it was "
                "written. Split it into smaller transactions.",
                operations=count,
                size_bytes=size,
                max_operations=limits.MAX_TRANSACTION_OPERATIONS,
                max_bytes=limits.MAX_QUEUED_BYTES,
            )
        if largest > limits.MAX_ENTRY_BYTES:
            raise TransactionTooLargeError(
                f"One change in this transaction is {_size(largest)} to upload; one upload "
                f"request holds at most {_size(limits.MAX_ENTRY_BYTES)} per change. It was "
                "rolled back: nothing of it was written. Store less in that row.",
                operations=count,
                size_bytes=largest,
                max_operations=limits.MAX_TRANSACTION_OPERATIONS,
                max_bytes=limits.MAX_ENTRY_BYTES,
            )
        return int(count)

    def set_write_check(self, check: WriteCheck | None, history: Iterable[str] = ()) -> None:
        """Runs `check` before every COMMIT that queued changes for upload; an exception it
        raises rolls the transaction back. For the synced tables (views) named in `history`,
        the rows a transaction writes are remembered as it found them (`previous`), by
        temporary triggers that fire beside the core's own on the views, so only local writes
        (never the rows sync applies) are recorded."""
        with self.lock:
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_BEFORE} (tbl TEXT NOT NULL, id TEXT NOT NULL,"
                " data TEXT, PRIMARY KEY (tbl, id)) WITHOUT ROWID"
            )
            views = {
                str(r[0])
                for r in self._conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'view'"
                ).fetchall()
            }
            for name in history:
                if name not in views or not _IDENTIFIER.match(name):
                    continue
                for event, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
                    self._conn.execute(
                        f'CREATE TEMP TRIGGER IF NOT EXISTS "papyrus_before_{event}_{name}"'
                        f' INSTEAD OF {event} ON main."{name}" FOR EACH ROW BEGIN'
                        f" INSERT OR IGNORE INTO {_BEFORE} (tbl, id, data) SELECT '{name}',"
                        f' {row}.id, (SELECT data FROM main."ps_data__{name}"'
                        f" WHERE id = {row}.id); END"
                    )
            self._write_check = check

    def _run_write_check(self, check: WriteCheck, queued_before: int) -> None:
        entries = [
            json.loads(str(data))
            for (data,) in self._conn.execute(
                "SELECT data FROM ps_crud WHERE id > ? ORDER BY id", (queued_before,)
            ).fetchall()
        ]
        if entries:
            check(TransactionWrites(entries, self.query, self._previous))

    def _previous(self, table: str, row_id: str) -> dict[str, Any] | None:
        rows = self._conn.execute(
            f"SELECT data FROM {_BEFORE} WHERE tbl = ? AND id = ?", (table, row_id)
        ).fetchall()
        if not rows:  # not written through the view in this transaction: as it is now
            rows = self._conn.execute(
                f'SELECT data FROM main."ps_data__{table}" WHERE id = ?', (row_id,)
            ).fetchall()
        if not rows or rows[0][0] is None:
            return None
        data = json.loads(str(rows[0][0]))
        return {"id": row_id, **data} if isinstance(data, dict) else None

    def _notify(self, changed: list[str], listeners: list[ChangeListener]) -> None:
        tables = frozenset(t for t in map(_visible_table, changed) if t)
        crud = "ps_crud" in changed
        if not tables and not crud:
            return
        for listener in listeners:
            try:
                listener(tables, crud)
            except Exception:
                log.exception("a change listener failed")

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Runs a statement and returns its rows as dicts (reads see committed data)."""
        with self.lock:
            cursor = self._conn.cursor().execute(sql, params)
            try:
                names = [d[0] for d in cursor.get_description()]
            except apsw.ExecutionCompleteError:  # a statement that returns no rows
                return []
            return [dict(zip(names, row, strict=True)) for row in cursor]

    def execute(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        """Runs a statement in a write transaction (or the caller's) and returns its rows."""
        with self.write():
            return self.query(sql, params)

    # -- schema and lifecycle ---------------------------------------------------------------

    def replace_schema(self, schema_json: str) -> None:
        with self.write():
            self._scalar("SELECT powersync_replace_schema(?)", (schema_json,))

    def client_id(self) -> str:
        with self.lock:
            client_id: str = self._scalar("SELECT powersync_client_id()")
            return client_id

    def clear(self, *, include_local: bool) -> None:
        """Hard reset of synced state (buckets, oplog, queue, synced rows); `include_local`
        also empties local-only tables."""
        with self.write():
            self._scalar("SELECT powersync_clear(?)", (1 if include_local else 0,))

    def offline_sync_status(self) -> dict[str, Any]:
        with self.lock:
            status: dict[str, Any] = json.loads(
                self._scalar("SELECT powersync_offline_sync_status()")
            )
            return status

    # -- the sync state machine --------------------------------------------------------------

    def control(self, op: str, payload: str | bytes | None = None) -> list[dict[str, Any]]:
        """One `powersync_control` call in its own write transaction; returns instructions."""
        with self.write():
            raw = self._scalar("SELECT powersync_control(?, ?)", (op, payload))
        if raw is None:
            return []
        instructions: list[dict[str, Any]] = json.loads(raw) if isinstance(raw, str) else raw
        return instructions

    # -- the upload queue ------------------------------------------------------------------

    def crud_rows(self, limit: int | None = None) -> list[CrudRow]:
        sql = "SELECT id, tx_id, data FROM ps_crud ORDER BY id"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (limit,)
        with self.lock:
            # ps_crud: id INTEGER PRIMARY KEY, tx_id INTEGER, data TEXT (the core's schema)
            rows = cast(
                list[tuple[int, int | None, str]], self._conn.execute(sql, params).fetchall()
            )
        return [CrudRow(r[0], r[1], json.loads(r[2])) for r in rows]

    def next_crud_transaction(self) -> list[CrudRow]:
        """The oldest queued transaction: consecutive rows sharing the first row's `tx_id`."""
        with self.lock:
            first = self._conn.execute(
                "SELECT id, tx_id FROM ps_crud ORDER BY id LIMIT 1"
            ).fetchall()
            if not first:
                return []
            first_id, tx_id = first[0]
            if tx_id is None:
                return self.crud_rows(1)
            rows = self._conn.execute(
                "SELECT id, tx_id, data FROM ps_crud WHERE id >= ? ORDER BY id", (first_id,)
            )
            out = []
            for row_id, row_tx, data in rows:
                if row_tx != tx_id:
                    break
                out.append(CrudRow(row_id, row_tx, json.loads(data)))
            return out

    def first_crud_id(self) -> int | None:
        with self.lock:
            first: int | None = self._scalar("SELECT id FROM ps_crud ORDER BY id LIMIT 1")
            return first

    def crud_count(self) -> int:
        with self.lock:
            count: int = self._scalar("SELECT count(*) FROM ps_crud")
            return count

    def complete_crud(self, last_id: int) -> None:
        """Removes uploaded entries and marks "uploaded, no write checkpoint yet" (target MAX)."""
        with self.write():
            self._conn.execute("DELETE FROM ps_crud WHERE id <= ?", (last_id,))
            self._scalar(
                "SELECT powersync_control('target_checkpoint_request_id', ?)", (_NO_TARGET,)
            )

    def needs_write_checkpoint(self) -> tuple[bool, int | None]:
        """Whether the queue is empty while the gate still waits for a write checkpoint, and
        the queue's sequence number to check against once the checkpoint arrives."""
        with self.write():
            target = self._scalar(
                "SELECT CAST(powersync_control('target_checkpoint_request_id', NULL) AS TEXT)"
            )
            empty = self._scalar("SELECT 1 FROM ps_crud LIMIT 1") is None
            seq = self._scalar("SELECT seq FROM sqlite_sequence WHERE name = 'ps_crud'")
        return (empty and target == _NO_TARGET), seq

    def set_write_checkpoint_target(self, checkpoint: str, seq_before: int | None) -> bool:
        """Sets the gate's target unless new local writes arrived meanwhile."""
        with self.write():
            empty = self._scalar("SELECT 1 FROM ps_crud LIMIT 1") is None
            seq = self._scalar("SELECT seq FROM sqlite_sequence WHERE name = 'ps_crud'")
            if not empty or seq != seq_before:
                return False
            self._scalar(
                "SELECT powersync_control('target_checkpoint_request_id', ?)", (checkpoint,)
            )
            return True

    def crud_stats(self, include_size: bool = False) -> tuple[int, int | None]:
        """Entries waiting to upload and, when asked, the bytes of their data (as the JS SDK
        counts them: the length of each entry's JSON)."""
        with self.lock:
            if include_size:
                count, size = self._conn.execute(
                    "SELECT count(*), COALESCE(sum(length(data)), 0) FROM ps_crud"
                ).fetchall()[0]
                return _int(count), _int(size)
            return _int(self._scalar("SELECT count(*) FROM ps_crud")), None

    # -- read transactions --------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[CoreConnection]:
        """A read transaction: every query inside sees one snapshot; writes are refused.

        Inside `write()` it simply joins the write transaction."""
        with self.lock:
            if self._depth or self._reading:
                yield self
                return
            self._conn.execute("BEGIN DEFERRED")
            self._conn.execute("PRAGMA query_only = 1")
            self._reading = True
            try:
                yield self
            finally:
                self._reading = False
                self._conn.execute("PRAGMA query_only = 0")
                self._conn.execute("COMMIT")

    def execute_many(self, sql: str, rows: list[tuple[Any, ...] | dict[str, Any]]) -> None:
        """One statement for each parameter set, in one write transaction."""
        with self.write():
            self._conn.cursor().executemany(sql, rows)

    # -- which tables a query reads (EXPLAIN) ---------------------------------------------

    def resolve_tables(self, sql: str, params: Params = ()) -> frozenset[str]:
        """The tables `sql` reads, as SQLite itself compiled it: the root pages its `OpenRead`
        opcodes open, mapped through `sqlite_schema` (an index counts as its table) and from the
        core's `ps_data__*` tables to the names change notifications use. This is how the
        official SDKs find a watched query's tables. An unknown table or column raises here."""
        with self.lock:
            info = apsw.ext.query_info(self._conn, sql, params, explain=True)
            if info.query_remaining and info.query_remaining.strip(" \t\r\n;"):
                raise ValueError("watch one SQL statement at a time")
            pages = {
                op.p2
                for op in info.explain or []
                if op.opcode == "OpenRead" and op.p3 == 0  # p3 = 0: the main database
            }
            if not pages:
                return frozenset()
            marks = ", ".join("?" for _ in pages)
            rows = self._conn.execute(
                f"SELECT DISTINCT tbl_name FROM sqlite_schema WHERE rootpage IN ({marks})",
                tuple(pages),
            ).fetchall()
        return frozenset(_watch_name(str(r[0])) for r in rows)

    # -- commits by other connections (other processes) -----------------------------------

    def poll_external_changes(self) -> bool:
        """Notifies listeners if another connection committed since the last call.

        `PRAGMA data_version` changes only for commits made by other connections, so this
        never reports our own writes twice. The tables another process touched are unknown,
        so every table counts as changed; the upload queue counts as changed when its
        sequence or size moved. Returns whether anything was reported."""
        with self.lock:
            if self._depth or self._reading:
                return False  # our own transaction is open; look again next time
            version = self._scalar("PRAGMA data_version")
            if version == self._data_version:
                return False
            first = self._data_version is None
            self._data_version = version
            mark = self._crud_mark_now()
            crud = mark != self._crud_mark
            self._crud_mark = mark
            if first:
                return False
            tables = frozenset(
                t
                for (name,) in self._conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table'"
                ).fetchall()
                if (t := _visible_table(str(name)))
            )
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(tables, crud)
            except Exception:
                log.exception("a change listener failed")
        return True

    def _crud_mark_now(self) -> tuple[int | None, int]:
        seq = self._scalar("SELECT seq FROM sqlite_sequence WHERE name = 'ps_crud'")
        return seq, self._scalar("SELECT count(*) FROM ps_crud")

    # -- sync completion and secure clearing ------------------------------------------------

    def uploads_acknowledged(self) -> bool:
        """Whether the upload queue is empty and a checkpoint covering the last upload has been
        applied: the write checkpoint requested after that upload (the gate's target) is no
        larger than the last one the core applied. True when nothing was ever uploaded. Read
        from the shared database, so it holds whichever process drives sync."""
        with self.lock:
            queued, target, applied = self._conn.execute(
                "SELECT (SELECT count(*) FROM ps_crud),"
                " (SELECT CAST(value AS TEXT) FROM ps_kv"
                "  WHERE key = 'target_checkpoint_request_id'),"
                " (SELECT CAST(value AS TEXT) FROM ps_kv"
                "  WHERE key = 'last_applied_checkpoint_request_id')"
            ).fetchall()[0]
        if queued:
            return False
        if target in (None, "0"):
            return True
        if target == _NO_TARGET:
            return False  # uploaded, but no write checkpoint requested yet
        return applied is not None and int(str(applied)) >= int(str(target))

    def scrub(self) -> bool:
        """Rewrites the file (VACUUM) and truncates the WAL, so rows deleted earlier cannot be
        read back from either file: SQLite otherwise leaves deleted content in free pages and
        in old WAL frames. False if another connection's open read kept the WAL from being
        emptied."""
        if self.path == ":memory:":
            return True
        with self.lock:
            if self._depth:
                raise RuntimeError("scrub() cannot run inside a transaction")
            self._conn.execute("VACUUM").fetchall()
            busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0][0]
        return not busy


def _int(value: Any) -> int:
    return int(value or 0)


def _watch_name(internal: str) -> str:
    """The name change notifications use for a table (`ps_crud` stays itself)."""
    return _visible_table(internal) or internal
