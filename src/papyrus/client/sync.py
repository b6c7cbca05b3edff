"""The sync loop: drives the core extension's `powersync_control` state machine over HTTP,
and runs the upload loop beside it.

The core does the protocol work (checkpoints, checksums, applying data, the write gate); this
module moves bytes and reacts to the core's instructions (docs/powersync-protocol.md, "The core
extension's API").
Failures never escape to the caller: they become `SyncStatus.download_error`/`upload_error`
and the loop retries, as every PowerSync SDK does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from papyrus.client.errors import SignedOutError, TransientError

if TYPE_CHECKING:
    from papyrus.client._core import CoreConnection
    from papyrus.client.connector import BackendConnector, Credentials
    from papyrus.client.database import PowerSyncDatabase

log = logging.getLogger(__name__)

_FULL_SYNC_PRIORITY = 2147483647
_LINE_BUFFER = 64  # lines read ahead of the core; bounds memory during a large initial sync


@dataclass(frozen=True)
class SyncOptions:
    """How the sync loop behaves; the defaults are those of the JavaScript SDK."""

    retry_delay: float = 5.0
    crud_upload_throttle: float = 1.0
    # Client parameters for the sync config (`connection.parameter(...)`); sent as `{}` when
    # unset, because the PowerSync service refuses `"parameters": null` (400 PSYNC_S2001).
    params: dict[str, Any] | None = None
    # Strings only: the service refuses other values. For its logs, nothing else.
    app_metadata: dict[str, str] | None = None
    include_default_streams: bool = True

    def __post_init__(self) -> None:
        if self.app_metadata is not None and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.app_metadata.items()
        ):
            raise ValueError("app_metadata maps strings to strings (the sync service says so)")

    # The service sends a keepalive about every 20 s; silence for longer means a dead stream.
    read_timeout: float = 90.0


@dataclass(frozen=True)
class SyncProgress:
    downloaded: int
    total: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.downloaded / self.total)


@dataclass(frozen=True)
class SyncStatus:
    """A snapshot of the sync state; `PowerSyncDatabase.status` always returns a fresh one."""

    connected: bool = False
    connecting: bool = False
    downloading: bool = False
    download_progress: SyncProgress | None = None
    uploading: bool = False
    upload_queue_size: int = 0
    has_synced: bool = False
    last_synced_at: datetime | None = None
    download_error: str | None = None
    upload_error: str | None = None
    # A checkpoint was applied since the stream (re)connected: local data is as fresh as the
    # service's. Reset whenever the connection drops.
    synced_since_connect: bool = False

    @property
    def last_error(self) -> str | None:
        return self.download_error or self.upload_error

    def with_core_status(self, core: dict[str, Any]) -> SyncStatus:
        """Merges the core's `UpdateSyncStatus` payload (timestamps in microseconds on 0.5)."""
        has_synced, last_synced = self.has_synced, self.last_synced_at
        for entry in core.get("priority_status") or []:
            if entry.get("priority") == _FULL_SYNC_PRIORITY:
                has_synced = bool(entry.get("has_synced"))
                stamp = entry.get("last_synced_at")
                last_synced = datetime.fromtimestamp(stamp / 1e6, UTC) if stamp else None
        progress = None
        downloading = core.get("downloading")
        if downloading:
            buckets = downloading.get("buckets", {}).values()
            done = sum(b.get("at_last", 0) + b.get("since_last", 0) for b in buckets)
            total = sum(b.get("target_count", 0) for b in buckets)
            progress = SyncProgress(done, total)
        connected = bool(core.get("connected"))
        return replace(
            self,
            connected=connected,
            synced_since_connect=self.synced_since_connect and connected,
            connecting=bool(core.get("connecting")),
            downloading=downloading is not None,
            download_progress=progress,
            has_synced=has_synced,
            last_synced_at=last_synced,
        )


class StatusTracker:
    """Holds the current SyncStatus; threads can wait for a condition on it."""

    def __init__(self, initial: SyncStatus) -> None:
        self._status = initial
        self._cond = threading.Condition()
        self._listeners: list[Callable[[SyncStatus], None]] = []

    @property
    def current(self) -> SyncStatus:
        with self._cond:
            return self._status

    def update(self, fn: Callable[[SyncStatus], SyncStatus] | None = None, **changes: Any) -> None:
        with self._cond:
            status = fn(self._status) if fn else self._status
            self._status = replace(status, **changes)
            listeners, snapshot = list(self._listeners), self._status
            self._cond.notify_all()
        for listener in listeners:
            try:
                listener(snapshot)
            except Exception:
                log.exception("a status listener failed")

    def add_listener(self, listener: Callable[[SyncStatus], None]) -> Callable[[], None]:
        with self._cond:
            self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def wait_for(self, predicate: Callable[[SyncStatus], bool], timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._status), timeout)


@dataclass
class _Iteration:
    """Events for the running stream: sync lines (bounded) and side events (never block)."""

    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    room: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(_LINE_BUFFER))


class StreamingSync:
    """One connection's background worker: a thread running the download and upload loops."""

    def __init__(
        self,
        database: PowerSyncDatabase,
        core: CoreConnection,
        connector: BackendConnector,
        options: SyncOptions,
        status: StatusTracker,
    ) -> None:
        self.database = database
        self.core = core
        self.connector = connector
        self.options = options
        self.status = status
        self._credentials: Credentials | None = None
        self._iteration: _Iteration | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._upload_wake: asyncio.Event | None = None
        self._started = threading.Event()
        self._http: httpx.AsyncClient | None = None
        self._thread = threading.Thread(target=self._run, name="papyrus-sync", daemon=True)

    # -- called from other threads ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._started.wait(10)

    def stop(self, timeout: float = 15.0) -> bool:
        """Ends both loops; True once the thread has ended, which is only after every call to
        the connector it made (an upload, a token fetch) has returned."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def trigger_upload(self) -> None:
        loop, wake = self._loop, self._upload_wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- the event loop -----------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
            # Cancelling a task does not stop its `to_thread` call: an upload may still be
            # writing its outcome. Wait for those, so a stopped loop writes nothing afterwards.
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._upload_wake = asyncio.Event()
        self._upload_wake.set()  # anything queued while offline goes out first
        timeout = httpx.Timeout(30.0, read=self.options.read_timeout)
        async with httpx.AsyncClient(timeout=timeout) as http:
            self._http = http
            tasks = [
                asyncio.create_task(self._download_loop()),
                asyncio.create_task(self._upload_loop()),
            ]
            self._started.set()
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self.status.update(
            connected=False,
            connecting=False,
            downloading=False,
            uploading=False,
            synced_since_connect=False,
        )

    # -- downloads --------------------------------------------------------------------

    async def _download_loop(self) -> None:
        while True:
            hide_disconnect = False
            try:
                hide_disconnect = await self._iterate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("sync stream failed: %s", exc)
                self.status.update(
                    download_error=_describe(exc),
                    connected=False,
                    connecting=False,
                    synced_since_connect=False,
                )
            if not hide_disconnect:
                await asyncio.sleep(self.options.retry_delay * random.uniform(0.9, 1.1))

    async def _get_credentials(self) -> Credentials:
        creds = self._credentials
        if (
            creds is not None
            and creds.expires_at is not None
            and creds.expires_at <= datetime.now(UTC)
        ):
            creds = None
        if creds is None:
            creds = await asyncio.to_thread(self.connector.fetch_credentials)
            if creds is None:
                raise SignedOutError("not signed in: no sync credentials")
            self._credentials = creds
        return creds

    async def _iterate(self) -> bool:
        """One stream connection; returns `hide_disconnect` of the CloseSyncStream that ended it."""
        creds = await self._get_credentials()
        iteration = _Iteration()
        self._iteration = iteration
        try:
            request = None
            for ins in self._control("start", self._start_payload()):
                if "EstablishSyncStream" in ins:
                    request = ins["EstablishSyncStream"]["request"]
                else:
                    self._handle(ins)
            if request is None:
                raise RuntimeError("the core did not ask for a sync stream")
            headers = {
                "Authorization": f"Token {creds.token}",
                "Content-Type": "application/json",
                "Accept": "application/x-ndjson",
            }
            url = f"{creds.endpoint}/sync/stream"
            async with self._client().stream(
                "POST", url, content=json.dumps(request), headers=headers
            ) as resp:
                self._check_response(resp, "sync stream")
                reader = asyncio.create_task(self._read(resp, iteration))
                try:
                    return await self._consume(iteration)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
        finally:
            self._iteration = None
            with contextlib.suppress(Exception):
                for ins in self._control("stop"):
                    if "CloseSyncStream" not in ins:
                        self._handle(ins)

    def _start_payload(self) -> str:
        """What `@powersync/node` passes to the core's `start` (resolved defaults included), so
        the core builds the same `/sync/stream` request body as the official SDKs."""
        return json.dumps(
            {
                "parameters": self.options.params or {},
                "app_metadata": self.options.app_metadata or {},
                "active_streams": [],
                "include_defaults": self.options.include_default_streams,
                "checkpoint_mode": "legacy",
                "schema": self.database.schema.to_json(),
            }
        )

    def _client(self) -> httpx.AsyncClient:
        assert self._http is not None, "used outside the sync thread"
        return self._http

    def _check_response(self, resp: httpx.Response, what: str) -> None:
        if resp.status_code == 401:
            # As the JS SDK: drop the token; the next attempt asks the connector again.
            self._credentials = None
            raise TransientError(f"the sync service refused the token for the {what} (401)")
        if resp.status_code != 200:
            raise TransientError(f"the sync service answered {resp.status_code} for the {what}")

    async def _read(self, resp: httpx.Response, iteration: _Iteration) -> None:
        try:
            async for line in resp.aiter_lines():
                if line.strip():
                    await iteration.room.acquire()
                    await iteration.events.put(("line_text", line))
            await iteration.events.put(("connection", "end"))
        except Exception as exc:
            await iteration.events.put(("error", exc))

    async def _consume(self, iteration: _Iteration) -> bool:
        close = self._apply(self._control("connection", "established"))
        self.trigger_upload()
        while close is None:
            op, payload = await iteration.events.get()
            if op == "error":
                raise TransientError(f"the sync stream broke: {_describe(payload)}")
            if op == "line_text":
                iteration.room.release()
            close = self._apply(self._control(op, payload))
        return bool(close.get("hide_disconnect"))

    def _control(self, op: str, payload: str | None = None) -> list[dict[str, Any]]:
        return self.core.control(op, payload)

    def _apply(self, instructions: list[dict[str, Any]]) -> dict[str, Any] | None:
        close = None
        for ins in instructions:
            if "CloseSyncStream" in ins:
                close = ins["CloseSyncStream"] or {}
            else:
                self._handle(ins)
        return close

    def _handle(self, ins: dict[str, Any]) -> None:
        kind, body = next(iter(ins.items()))
        if kind == "UpdateSyncStatus":
            self.status.update(lambda s: s.with_core_status(body["status"]))
        elif kind == "LogLine":
            level = {"WARNING": logging.WARNING, "INFO": logging.INFO}.get(body.get("severity"))
            log.log(level or logging.DEBUG, "core: %s", body.get("line"))
        elif kind == "DidCompleteSync":
            self.status.update(download_error=None, synced_since_connect=True)
        elif kind == "FetchCredentials":
            self._credentials = None
            if not body.get("did_expire"):
                asyncio.get_running_loop().create_task(self._prefetch_credentials())
        elif kind == "EstablishSyncStream":
            log.warning("unexpected EstablishSyncStream during an iteration")
        else:
            log.debug("ignoring core instruction %s", kind)

    async def _prefetch_credentials(self) -> None:
        """The token is about to expire: fetch a new one, then reconnect at once with it."""
        try:
            creds = await asyncio.to_thread(self.connector.fetch_credentials)
        except Exception as exc:
            log.info("prefetching sync credentials failed: %s", exc)
            return
        self._credentials = creds
        iteration = self._iteration
        if creds is not None and iteration is not None:
            iteration.events.put_nowait(("refreshed_token", None))

    # -- uploads ----------------------------------------------------------------------

    async def _upload_loop(self) -> None:
        assert self._upload_wake is not None
        last_run = 0.0
        while True:
            await self._upload_wake.wait()
            self._upload_wake.clear()
            wait = self.options.crud_upload_throttle - (time.monotonic() - last_run)
            if wait > 0:
                await asyncio.sleep(wait)
            last_run = time.monotonic()
            try:
                await self._upload_all()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("upload failed: %s", exc)
                self.status.update(uploading=False, upload_error=_describe(exc))
                await asyncio.sleep(self.options.retry_delay * random.uniform(0.9, 1.1))
                self._upload_wake.set()

    async def _upload_all(self) -> None:
        previous_head: int | None = None
        while True:
            head = self.core.first_crud_id()
            if head is None:
                self.status.update(uploading=False, upload_error=None)
                await self._request_write_checkpoint()
                return
            if head == previous_head:
                raise RuntimeError(
                    "upload_data() returned without completing the oldest queued transaction"
                )
            previous_head = head
            self.status.update(uploading=True)
            await asyncio.to_thread(self.connector.upload_data, self.database)

    async def _request_write_checkpoint(self) -> None:
        """Legacy write checkpoint: lets the core apply downloads held back by our uploads."""
        needed, seq = self.core.needs_write_checkpoint()
        if not needed:
            return
        creds = await self._get_credentials()
        resp = await self._client().get(
            f"{creds.endpoint}/write-checkpoint2.json",
            params={"client_id": self.core.client_id()},
            headers={"Authorization": f"Token {creds.token}"},
        )
        self._check_response(resp, "write checkpoint")
        checkpoint = str(resp.json()["data"]["write_checkpoint"])
        if self.core.set_write_checkpoint_target(checkpoint, seq):
            iteration = self._iteration
            if iteration is not None:
                iteration.events.put_nowait(("completed_upload", None))
        else:
            self.trigger_upload()  # new local writes arrived meanwhile; go round again


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TransportError):
        # The sync loops' own HTTP client only talks to the sync service (the connector's calls
        # to the Papyrus API raise TransientError, which names the API).
        return f"cannot reach the sync service ({type(exc).__name__}: {text})"
    return text
