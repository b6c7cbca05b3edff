"""PowerSyncDatabase: one local SQLite database with the core extension, a schema, the upload
queue, change notifications, and (optionally) a connection to a sync service.

The API follows the official PowerSync SDKs: `execute`, `execute_batch`, `get`, `get_optional`,
`get_all`, `read_transaction`, `write_transaction`, `watch(sql, params)` (and its async variant),
`get_upload_queue_stats`, status changes as listeners or an async iterator.

Several processes may open one database. Exactly one of them drives sync (see
`_interprocess.py`); a background poller (`PRAGMA data_version`) tells every process about the
others' commits, so watchers see them and the sync owner uploads what the others queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import apsw

from papyrus.client import validation
from papyrus.client._core import (
    CoreConnection,
    Params,
    Row,
    TransactionWrites,
    locate_core_extension,
)
from papyrus.client._interprocess import (
    StatusFile,
    StopRequest,
    StopRequests,
    SyncLock,
    merge_live,
    pid_alive,
)
from papyrus.client.crud import CrudBatch, CrudEntry, CrudTransaction
from papyrus.client.errors import LocalDatabaseError, NotFoundError, SyncBusyError
from papyrus.client.schema import Schema
from papyrus.client.sync import StatusTracker, StreamingSync, SyncOptions, SyncStatus
from papyrus.contract import TABLES, Table

if TYPE_CHECKING:
    from papyrus.client.connector import BackendConnector

log = logging.getLogger(__name__)

T = TypeVar("T")

TableListener = Callable[[frozenset[str]], None]

DEFAULT_POLL_INTERVAL = 0.1
"""Seconds between two looks at `PRAGMA data_version` (commits by other processes)."""

DEFAULT_STOP_TIMEOUT = 30.0
"""Seconds `exclusive()` waits for the process that syncs the database to stop."""
_STOP_RETRY = 0.02


@dataclass(frozen=True)
class SyncStopped:
    """Why a connection ended by itself: the database no longer belongs to what it synced for
    (the `still_valid` given to `connect()` turned false), because process `pid`, doing
    `action` ("signing out", ...), cleared it; both None when no process said so."""

    pid: int | None = None
    action: str | None = None


@dataclass(frozen=True)
class UploadQueueStats:
    """Local changes waiting to upload: `count` entries, `size` bytes of data (if asked)."""

    count: int
    size: int | None = None


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


class AsyncWatch(Generic[T]):
    """`Watch` for asyncio: `async for rows in db.watch_async(sql, params)`.

    The query runs in a worker thread, so the event loop never waits on SQLite."""

    def __init__(self, database: PowerSyncDatabase, query: Callable[[], T], tables: Iterable[str]):
        self._query = query
        self._pending = True  # the first result comes at once
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._unsubscribe = database.on_change(self._changed, tables)

    def _changed(self, _tables: frozenset[str]) -> None:
        self._pending = True
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(event.set)

    def __aiter__(self) -> AsyncWatch[T]:
        return self

    async def __anext__(self) -> T:
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
        if self._pending:
            self._event.set()
        if self._closed:
            raise StopAsyncIteration
        await self._event.wait()
        self._event.clear()
        self._pending = False
        if self._closed:
            raise StopAsyncIteration
        return await asyncio.to_thread(self._query)

    def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        self._changed(frozenset())

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> AsyncWatch[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class PowerSyncDatabase:
    """A local database managed by the PowerSync core extension.

    Write through the views named by the schema (plain SQL works); the extension queues each
    change for upload. `connect()` starts syncing with a `BackendConnector` unless another
    process already syncs this database, in which case this one follows that process's status.

    Every write transaction that queues changes of the synced tables is checked against the
    sync contract before COMMIT (`papyrus.client.validation`): an invalid one raises
    `ValidationError` and is rolled back, whichever API wrote it. `validate_writes=False`
    turns that off (and the repositories' own checks), leaving the server to judge.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        *,
        core_extension: str | os.PathLike[str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        validate_writes: bool = True,
    ) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self.schema = schema
        extension = locate_core_extension(core_extension)
        try:
            self._core = CoreConnection(path, extension)
        except apsw.Error as exc:
            raise LocalDatabaseError(f"cannot open the local database {path}: {exc}") from exc
        try:
            self._core.replace_schema(schema.to_json_text())
        except BaseException:
            self._core.close()
            raise
        self._validate_writes = False
        self.validate_writes = validate_writes
        self._sync: StreamingSync | None = None
        self._connection: tuple[BackendConnector, SyncOptions] | None = None
        self._sync_lock = threading.RLock()
        self._status = StatusTracker(
            SyncStatus(upload_queue_size=self._core.crud_count()).with_core_status(
                self._core.offline_sync_status()
            )
        )
        self._core.add_listener(self._on_commit)
        self._shared = self.path != ":memory:"
        self._lock_file = SyncLock(self.path) if self._shared else None
        self._status_file = StatusFile(self.path) if self._shared else None
        self._stop_requests = StopRequests(self.path) if self._shared else None
        self._nonce = uuid.uuid4().hex  # tells this object's stop requests from the others'
        self._still_valid: Callable[[], bool] | None = None
        self._paused_by: StopRequest | None = None
        self._stopping: StreamingSync | None = None  # stopped, but its thread has not ended
        self._exclusive = 0
        self._exclusive_lock = threading.RLock()
        self._stopped_listeners: list[Callable[[SyncStopped], None]] = []
        self._published: SyncStatus | None = None
        self._owner_pid: int | None = None
        self._poller: _Poller | None = None
        if self._shared:
            self._core.poll_external_changes()  # the baseline
            self._observe_owner()
            self._poller = _Poller(self._tick, poll_interval, f"papyrus-poll {Path(path).name}")
            self._poller.start()

    @property
    def core_version(self) -> str:
        return self._core.version

    @property
    def validate_writes(self) -> bool:
        """Whether writes are checked against the sync contract before they are queued."""
        return self._validate_writes

    @validate_writes.setter
    def validate_writes(self, enabled: bool) -> None:
        synced = {t.name for t in self.schema.tables if not t.local_only}
        history = [
            t.name
            for t in TABLES
            if t.name in synced and (t.closed_by or any(c.immutable for c in t.columns))
        ]
        # A database without synced tables (the guest library) queues nothing to check.
        checking = enabled and bool(synced & {t.name for t in TABLES})
        self._core.set_write_check(self._check_writes if checking else None, history)
        self._validate_writes = enabled

    def _check_writes(self, writes: TransactionWrites) -> None:
        def previous(table: Table, row_id: str) -> Row | None:
            return writes.previous(table.name, row_id)

        rows = validation.DatabaseRows(writes.query, previous)
        validation.check_transaction(writes.entries, rows)

    def client_id(self) -> str:
        """This database's PowerSync client id (stable until the database is cleared)."""
        return self._core.client_id()

    # -- SQL ------------------------------------------------------------------------------

    def execute(self, sql: str, params: Params = ()) -> list[Row]:
        """Runs one statement in a write transaction (or the open one) and returns its rows."""
        return self._core.execute(sql, params)

    def execute_batch(self, sql: str, params: Iterable[Params]) -> None:
        """Runs `sql` once per parameter set, all in one write transaction (so they upload as
        one transaction): all of them are kept, or none."""
        self._core.execute_many(sql, list(params))

    def get_all(self, sql: str, params: Params = ()) -> list[Row]:
        return self._core.query(sql, params)

    def get_optional(self, sql: str, params: Params = ()) -> Row | None:
        rows = self._core.query(sql, params)
        return rows[0] if rows else None

    def get(self, sql: str, params: Params = ()) -> Row:
        """The first row; raises `NotFoundError` when the query returns none."""
        row = self.get_optional(sql, params)
        if row is None:
            raise NotFoundError("the query returned no rows")
        return row

    @contextmanager
    def read_transaction(self) -> Iterator[PowerSyncDatabase]:
        """Reads inside the block see one consistent snapshot; writes inside it raise."""
        with self._core.read():
            yield self

    @contextmanager
    def write_transaction(self) -> Iterator[PowerSyncDatabase]:
        """Groups writes into one transaction: they upload together as one CrudTransaction.

        Raises `TransactionTooLargeError` (and rolls back) when the changes it queues exceed
        what the server accepts in one transaction; see `papyrus.client.limits`."""
        with self._core.write():
            yield self

    # -- change notifications and watched queries ----------------------------------------

    def on_change(
        self, listener: TableListener, tables: Iterable[str] | None = None
    ) -> Callable[[], None]:
        """Calls `listener(changed_tables)` after each commit touching `tables` (all if None),
        whether the write was local, applied by sync, or made by another process. Returns an
        unsubscribe function."""
        wanted = frozenset(tables) if tables is not None else None

        def filtered(changed: frozenset[str], crud: bool) -> None:
            if crud:
                changed = changed | {"ps_crud"}
            hit = changed if wanted is None else changed & wanted
            if hit:
                listener(hit)

        return self._core.add_listener(filtered)

    def resolve_tables(self, sql: str, params: Params = ()) -> frozenset[str]:
        """The tables `sql` reads, found by SQLite itself (`EXPLAIN`); views resolve to the
        tables behind them. Raises for an unknown table or column, or for a non-query."""
        return self._core.resolve_tables(sql, params)

    @overload
    def watch(self, query: str, params: Params = ()) -> Watch[list[Row]]: ...

    @overload
    def watch(self, query: Callable[[], T], params: Iterable[str]) -> Watch[T]: ...

    def watch(self, query: str | Callable[[], Any], params: Any = ()) -> Watch[Any]:
        """A query's result now and again after every change to the tables it reads.

        `watch(sql, params)` finds those tables itself (a typo in a table name raises here);
        `watch(query_fn, tables)` re-runs any function when `tables` change."""
        fn, tables = self._watched(query, params)
        return Watch(self, fn, tables)

    @overload
    def watch_async(self, query: str, params: Params = ()) -> AsyncWatch[list[Row]]: ...

    @overload
    def watch_async(self, query: Callable[[], T], params: Iterable[str]) -> AsyncWatch[T]: ...

    def watch_async(self, query: str | Callable[[], Any], params: Any = ()) -> AsyncWatch[Any]:
        """`watch` as an async iterator: `async for rows in db.watch_async(sql, params)`."""
        fn, tables = self._watched(query, params)
        return AsyncWatch(self, fn, tables)

    def _watched(self, query: str | Callable[[], Any], params: Any) -> tuple[Any, frozenset[str]]:
        if callable(query):
            if isinstance(params, str) or not isinstance(params, Iterable):
                raise TypeError("watch(query_fn, tables): give the tables as a list of names")
            return query, frozenset(params)
        sql, bound = query, params
        tables = self.resolve_tables(sql, bound)
        return (lambda: self.get_all(sql, bound)), tables

    # -- the upload queue ------------------------------------------------------------------

    def upload_queue_size(self) -> int:
        return self._core.crud_count()

    def get_upload_queue_stats(self, include_size: bool = False) -> UploadQueueStats:
        """How many entries wait to upload and, with `include_size`, their size in bytes."""
        count, size = self._core.crud_stats(include_size)
        return UploadQueueStats(count, size)

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

    # -- sync status ----------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus:
        """This database's sync status, also when another process drives its sync."""
        return self._status.current

    def on_status_change(self, listener: Callable[[SyncStatus], None]) -> Callable[[], None]:
        return self._status.add_listener(listener)

    async def status_changes(self) -> AsyncIterator[SyncStatus]:
        """The status now, then again whenever it changes (`async for status in ...`).

        A slow consumer gets the latest status, not a backlog of stale ones."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake(_status: SyncStatus) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(changed.set)

        remove = self.on_status_change(wake)
        try:
            last: SyncStatus | None = None
            while True:
                current = self.status
                if current != last:
                    last = current
                    yield current
                await changed.wait()
                changed.clear()
        finally:
            remove()

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
        queue is empty and the checkpoint that covers the last upload (its write checkpoint) has
        been applied. When this object drives sync, a checkpoint must also have been applied on
        the current connection; when another process drives it, that process must be connected
        and not mid-download (its status arrives through the shared files). Returns False on
        timeout or when `abort(status)`, consulted on every status change, returns True.

        Needs a connection (`connect()`) to ever succeed. Driven by the sync loop's own events
        (`DidCompleteSync`, uploads completing) and the core's record of the last applied write
        checkpoint in the shared database, not by comparing clocks."""
        deadline = None if timeout is None else time.monotonic() + timeout
        changed = threading.Event()
        unsubscribe = self._status.add_listener(lambda _: changed.set())
        try:
            while True:
                changed.clear()
                status = self._status.current
                if abort is not None and abort(status):
                    return False
                if self._synced(status):
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                # Status changes wake us; the cap re-checks writes made by other connections.
                changed.wait(1.0 if remaining is None else min(remaining, 1.0))
        finally:
            unsubscribe()

    def _synced(self, status: SyncStatus) -> bool:
        if self.local_writes_pending():
            return False
        if self.owns_sync:
            return status.synced_since_connect
        return status.connected and status.has_synced and not status.downloading

    def local_writes_pending(self) -> bool:
        """Whether local writes have not yet made the round trip: still queued, or uploaded but
        the checkpoint containing them not applied yet. Read from the shared database (the
        core records the last write checkpoint it applied), so it holds whichever process
        drives sync."""
        return not self._core.uploads_acknowledged()

    # -- sync -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether `connect()` is in effect (this process syncs, or follows the one that does)."""
        return self._connection is not None

    @property
    def owns_sync(self) -> bool:
        """Whether this database object runs the sync loop of its file."""
        return self._sync is not None

    @property
    def sync_owner_pid(self) -> int | None:
        """The process that drives sync for this database file, when it is not this object."""
        if self._sync is not None:
            return None
        if self._owner_pid is None and self._connection is not None and self._lock_file:
            return self._lock_file.holder_pid()  # took the lock, has not published yet
        return self._owner_pid

    def connect(
        self,
        connector: BackendConnector,
        options: SyncOptions | None = None,
        *,
        still_valid: Callable[[], bool] | None = None,
    ) -> None:
        """Starts syncing in the background (replacing an earlier connection).

        If another process (or another database object) already syncs this file, no second
        sync loop starts: this one mirrors the owner's status, the owner uploads the writes
        made here, and this one takes over if the owner goes away while still connected.

        `still_valid()` says whether the database still belongs to what this connection syncs
        for (say, the signed-in account). It is asked before a loop starts and on every poll;
        once it is false the connection ends for good and `on_sync_stopped` listeners hear why.
        While another process holds the file in `exclusive()`, the connection pauses."""
        with self._sync_lock:
            self._halt_sync()
            self._connection = (connector, options or SyncOptions())
            self._still_valid = still_valid
            self._paused_by = None
        self._settle_and_notify()

    def disconnect(self) -> None:
        with self._sync_lock:
            syncing = self._sync is not None
            self._connection = None
            self._still_valid = None
            self._paused_by = None
            self._halt_sync()
            self._let_go()
        if not syncing:
            self._status.update(lambda s: merge_live(s, None))
        self._observe_owner(force=True)

    def on_sync_stopped(self, listener: Callable[[SyncStopped], None]) -> Callable[[], None]:
        """Calls `listener(SyncStopped)` when a connection ends by itself (see `connect()`),
        from a background thread. Returns an unsubscribe function."""
        self._stopped_listeners.append(listener)
        return lambda: (
            self._stopped_listeners.remove(listener)
            if listener in self._stopped_listeners
            else None
        )

    def stop_request(self) -> SyncStopped | None:
        """The process (and what it is doing) that holds this file in `exclusive()`, if any."""
        request = self._stop_requests.read() if self._stop_requests is not None else None
        if request is None or request.nonce == self._nonce:
            return None
        return SyncStopped(request.pid, request.action)

    @contextmanager
    def exclusive(self, action: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> Iterator[None]:
        """Holds this file's sync lock for the block, so that no process syncs the database
        while the block changes it wholesale (`action`, say "signing out", clears it).

        This object's own connection ends first. Then every process connected to the file is
        asked to pause (a stop request next to the database, `<db>.sync-stop`): the one syncing
        stops its loop, after its uploads in flight have returned, and lets go of the lock.
        Their connections stay paused while the block runs; afterwards each resumes only if
        its `still_valid()` still holds. Raises `SyncBusyError` naming the process, having
        changed nothing, if the lock is not free within `timeout` seconds. Re-entrant; a
        connection made inside the block keeps the lock when the block ends."""
        with self._exclusive_lock:
            if self._exclusive or self._lock_file is None or self._stop_requests is None:
                self._exclusive += 1
                try:
                    yield
                finally:
                    self._exclusive -= 1
                return
            self.disconnect()
            self._stop_requests.post(StopRequest(os.getpid(), self._nonce, action))
            try:
                self._wait_for_lock(action, timeout)
            except BaseException:
                self._stop_requests.withdraw(self._nonce)
                raise
            try:
                yield
            finally:
                with self._sync_lock:
                    self._exclusive = 0
                    self._let_go()
                self._stop_requests.withdraw(self._nonce)
                self._settle_and_notify()

    def _wait_for_lock(self, action: str, timeout: float) -> None:
        assert self._lock_file is not None
        deadline = time.monotonic() + timeout
        while True:
            with self._sync_lock:
                self._reap()
                if self._stopping is None and self._lock_file.acquire():
                    self._exclusive = 1
                    return
            if time.monotonic() >= deadline:
                pid = os.getpid() if self._stopping is not None else self._lock_file.holder_pid()
                raise SyncBusyError(pid, action, timeout)
            time.sleep(_STOP_RETRY)

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
        if self._poller is not None:
            self._poller.stop()
        self.disconnect()
        if self._lock_file is not None:
            self._lock_file.release()  # also while a stopped loop's upload still runs
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
        if self._sync is None and tables:
            # Another process may have applied a checkpoint: refresh what the database knows.
            core = self._core.offline_sync_status()
            self._status.update(lambda s: merge_live(s.with_core_status(core), s))

    def _settle(self) -> SyncStopped | None:
        """Brings this object's sync loop in line with its connection and the shared files: a
        connection whose database no longer belongs to what it syncs for ends; one that another
        process's stop request pauses stops its loop; otherwise it runs the loop if it can get
        the lock. Returns why the connection ended, if it did. The checks query the database
        before `_sync_lock` is taken: the core is never queried under it."""
        connection = self._connection
        request = self._stop_requests.read() if self._stop_requests and connection else None
        if request is not None and request.nonce == self._nonce:
            request = None
        valid = self._valid() if connection is not None else True
        with self._sync_lock:
            self._reap()
            if connection is None or self._connection is not connection:
                self._let_go()
                return None
            if not valid:
                by = request or self._paused_by
                self._connection = None
                self._still_valid = None
                self._paused_by = None
                self._halt_sync()
                self._let_go()
                log.info("stopped syncing: the database no longer belongs to this connection")
                return SyncStopped(by.pid, by.action) if by else SyncStopped()
            if request is not None:
                if self._sync is not None:
                    log.info("pausing sync: process %d is %s", request.pid, request.action)
                    self._halt_sync()
                self._paused_by = request
                self._let_go()
                return None
            self._paused_by = None
            self._start_if_free()
            return None

    def _settle_and_notify(self) -> None:
        ended = self._settle()
        if ended is not None:
            for listener in list(self._stopped_listeners):
                try:
                    listener(ended)
                except Exception:
                    log.exception("a sync-stopped listener failed")
        if self._sync is None:
            self._observe_owner()

    def _valid(self) -> bool:
        check = self._still_valid
        if check is None:
            return True
        try:
            return bool(check())
        except Exception:
            log.debug("still_valid() failed; keeping the connection", exc_info=True)
            return True

    def _start_if_free(self) -> None:
        """With `_sync_lock` held: run the sync loop if this object can get the file's lock."""
        if self._connection is None or self._sync is not None or self._stopping is not None:
            return
        if self._lock_file is not None and not self._lock_file.acquire():
            return
        connector, options = self._connection
        self._owner_pid = None
        self._status.update(lambda s: merge_live(s, None))
        self._sync = StreamingSync(self, self._core, connector, options, self._status)
        self._sync.start()
        self._publish()

    def _halt_sync(self) -> None:
        """With `_sync_lock` held: stops this object's loop (the lock is kept until `_let_go`)."""
        sync, self._sync = self._sync, None
        if sync is None:
            return
        if not sync.stop():
            log.warning("the sync loop has not stopped yet; keeping the sync lock until it does")
            self._stopping = sync
        if self._status_file is not None and self._published is not None:
            self._status_file.remove()
        self._published = None

    def _reap(self) -> None:
        if self._stopping is not None and not self._stopping.alive:
            self._stopping = None

    def _let_go(self) -> None:
        """With `_sync_lock` held: releases the file's lock unless this object still syncs,
        holds it in `exclusive()`, or waits for a stopped loop to end."""
        self._reap()
        if self._lock_file is None or not self._lock_file.held:
            return
        if self._sync is None and self._stopping is None and not self._exclusive:
            self._lock_file.release()

    def _publish(self) -> None:
        """The owner writes its status for the other processes when it changed."""
        status = self._status.current
        if self._status_file is None or status == self._published:
            return
        try:
            self._status_file.publish(status)
            self._published = status
        except OSError as exc:
            log.debug("could not publish the sync status: %s", exc)

    def _observe_owner(self, force: bool = False) -> None:
        """A non-owner mirrors the live status another process publishes."""
        if self._status_file is None or self._sync is not None:
            return
        owner_gone = self._owner_pid is not None and not pid_alive(self._owner_pid)
        if not (self._status_file.changed() or owner_gone or force):
            return
        published = self._status_file.read()
        if published is None:
            self._owner_pid = None
            self._status.update(lambda s: merge_live(s, None))
            return
        pid, owner = published
        self._owner_pid = pid
        self._status.update(lambda s: merge_live(s, owner))

    def _tick(self) -> None:
        """The poller's round: others' commits, stop requests and take-overs, then the sync
        owner's status."""
        self._core.poll_external_changes()
        self._settle_and_notify()
        with self._sync_lock:
            if self._sync is not None:
                self._publish()


class _Poller:
    """A daemon thread calling `tick` every `interval` seconds until stopped."""

    def __init__(self, tick: Callable[[], None], interval: float, name: str) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("polling the database for other processes' changes failed")
