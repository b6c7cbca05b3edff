"""PowerSyncDatabase: one local SQLite database with the core extension, a schema, the upload
queue, change notifications, and (optionally) a connection to a sync service."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from papyrus.client._core import CoreConnection, Params, Row, locate_core_extension
from papyrus.client.crud import CrudBatch, CrudEntry, CrudTransaction
from papyrus.client.schema import Schema
from papyrus.client.sync import StatusTracker, StreamingSync, SyncOptions, SyncStatus

if TYPE_CHECKING:
    from papyrus.client.connector import BackendConnector

T = TypeVar("T")

TableListener = Callable[[frozenset[str]], None]


class Watch(Generic[T]):
    """Yields a fresh query result now and again after every committed change to its tables.

    Results are recomputed when the consumer asks for the next one, so bursts of changes
    coalesce and nothing is cached between emissions.
    """

    def __init__(self, database: PowerSyncDatabase, query: Callable[[], T], tables: Iterable[str]):
        self._query = query
        self._dirty = threading.Event()
        self._dirty.set()  # the first result comes at once
        self._closed = False
        self._unsubscribe = database.on_change(lambda _: self._dirty.set(), tables)

    def next(self, timeout: float | None = None) -> T:
        """The next result; raises TimeoutError if nothing changed within `timeout` seconds."""
        if self._closed:
            raise StopIteration
        if not self._dirty.wait(timeout):
            raise TimeoutError("no change within the timeout")
        self._dirty.clear()
        if self._closed:
            raise StopIteration
        return self._query()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        return self.next()

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        self._dirty.set()

    def __enter__(self) -> Watch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PowerSyncDatabase:
    """A local database managed by the PowerSync core extension.

    Write through the views named by the schema (plain SQL works); the extension queues each
    change for upload. `connect()` starts syncing with a `BackendConnector`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        *,
        core_extension: str | os.PathLike[str] | None = None,
    ) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.schema = schema
        self._core = CoreConnection(path, locate_core_extension(core_extension))
        self._core.replace_schema(schema.to_json_text())
        self._sync: StreamingSync | None = None
        self._sync_lock = threading.Lock()
        self._status = StatusTracker(
            SyncStatus(upload_queue_size=self._core.crud_count()).with_core_status(
                self._core.offline_sync_status()
            )
        )
        self._core.add_listener(self._on_commit)

    @property
    def core_version(self) -> str:
        return self._core.version

    def client_id(self) -> str:
        """This database's PowerSync client id (stable until the database is cleared)."""
        return self._core.client_id()

    # -- SQL ------------------------------------------------------------------------------

    def execute(self, sql: str, params: Params = ()) -> list[Row]:
        """Runs one statement in a write transaction (or the open one) and returns its rows."""
        return self._core.execute(sql, params)

    def get_all(self, sql: str, params: Params = ()) -> list[Row]:
        return self._core.query(sql, params)

    def get_optional(self, sql: str, params: Params = ()) -> Row | None:
        rows = self._core.query(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def write_transaction(self) -> Iterator[PowerSyncDatabase]:
        """Groups writes into one transaction: they upload together as one CrudTransaction.

        Raises `TransactionTooLargeError` (and rolls back) when the changes it queues exceed
        what the server accepts in one transaction; see `papyrus.client.limits`."""
        with self._core.write():
            yield self

    def on_change(
        self, listener: TableListener, tables: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Calls `listener(changed_tables)` after each commit touching `tables` (all if None),
        whether the write was local or applied by sync. Returns an unsubscribe function."""
        wanted = frozenset(tables) if tables is not None else None

        def filtered(changed: frozenset[str], _crud: bool) -> None:
            hit = changed if wanted is None else changed & wanted
            if hit:
                listener(hit)

        return self._core.add_listener(filtered)

    def watch(self, query: Callable[[], T], tables: Iterable[str]) -> Watch[T]:
        return Watch(self, query, tables)

    # -- the upload queue ------------------------------------------------------------------

    def upload_queue_size(self) -> int:
        return self._core.crud_count()

    def get_crud_batch(self, limit: int = 100) -> CrudBatch | None:
        """Up to `limit` queued entries, oldest first, regardless of transactions."""
        rows = self._core.crud_rows(limit + 1)
        if not rows:
            return None
        have_more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1].id
        return CrudBatch(
            [CrudEntry.from_row(r) for r in rows], have_more, lambda: self._core.complete_crud(last)
        )

    def get_next_crud_transaction(self) -> CrudTransaction | None:
        """The oldest queued transaction, or None when nothing is waiting."""
        rows = self._core.next_crud_transaction()
        if not rows:
            return None
        last = rows[-1].id
        return CrudTransaction(
            crud=[CrudEntry.from_row(r) for r in rows],
            have_more=False,
            _complete=lambda: self._core.complete_crud(last),
            transaction_id=rows[0].tx_id,
        )

    # -- sync -------------------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus:
        return self._status.current

    def on_status_change(self, listener: Callable[[SyncStatus], None]) -> Callable[[], None]:
        return self._status.add_listener(listener)

    def wait_for_status(
        self, predicate: Callable[[SyncStatus], bool], timeout: float | None = None
    ) -> bool:
        return self._status.wait_for(predicate, timeout)

    def wait_for_first_sync(self, timeout: float | None = None) -> bool:
        return self._status.wait_for(lambda s: s.has_synced, timeout)

    def wait_for_sync(
        self,
        timeout: float | None = None,
        *,
        abort: Callable[[SyncStatus], bool] | None = None,
    ) -> bool:
        """Blocks until everything written locally so far is on the server and back: the upload
        queue is empty, the checkpoint that covers the last upload (its write checkpoint) has
        been applied, and a checkpoint was applied on the current connection. Returns False on
        timeout or when `abort(status)`, consulted on every status change, returns True.

        Needs a connection (`connect()`) to ever succeed. Driven by the sync loop's own events
        (`DidCompleteSync`, uploads completing), not by comparing clocks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = threading.Event()
        unsubscribe = self._status.add_listener(lambda _: changed.set())
        try:
            while True:
                changed.clear()
                status = self._status.current
                if abort is not None and abort(status):
                    return False
                if status.synced_since_connect and self._core.uploads_acknowledged():
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Status changes wake us; the cap re-checks writes made by other connections.
                changed.wait(1.0 if remaining is None else min(remaining, 1.0))
        finally:
            unsubscribe()

    @property
    def connected(self) -> bool:
        return self._sync is not None

    def connect(self, connector: BackendConnector, options: SyncOptions | None = None) -> None:
        """Starts syncing in the background (replacing an earlier connection)."""
        with self._sync_lock:
            if self._sync is not None:
                self._sync.stop()
            self._sync = StreamingSync(
                self, self._core, connector, options or SyncOptions(), self._status
            )
            self._sync.start()

    def disconnect(self) -> None:
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.stop()

    def disconnect_and_clear(self, *, clear_local: bool = True) -> None:
        """Stops syncing and deletes every synced row, bucket and queued write (logout)."""
        self.disconnect()
        self._core.clear(include_local=clear_local)
        self._status.update(lambda s: SyncStatus())

    def scrub(self) -> bool:
        """Rewrites the database file and empties its WAL, so rows deleted earlier (a logout's
        clear) cannot be read back from the files. False if another connection's open read kept
        the WAL from being emptied."""
        return self._core.scrub()

    def close(self) -> None:
        self.disconnect()
        self._core.close()

    def __enter__(self) -> PowerSyncDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------

    def _on_commit(self, tables: frozenset[str], crud: bool) -> None:
        if crud:
            self._status.update(upload_queue_size=self._core.crud_count())
            sync = self._sync
            if sync is not None:
                sync.trigger_upload()
