"""Several processes on one database: who drives sync, and what the others can see of it.

Every process may open the same database file (a `books watch` in one terminal, `books add` in
another), but the core's sync state lives in one connection's memory: two sync loops on one
file would corrupt each other's checksums. So exactly one process per database drives sync: the
one holding an exclusive `flock` on `<db>.sync-lock`. The OS releases the lock when that process
exits, however it exits, so a crashed owner never blocks the others.

The owner publishes its live sync status (connected, downloading, errors, ...) to
`<db>.sync-status`, which the others read; everything else (the upload queue, the synced rows,
when the last checkpoint was applied) they read from the shared database itself.

A process about to clear the database (a sign-out, another account signing in) first posts a
stop request, `<db>.sync-stop`: every connected process pauses, the owner stops its loop and
lets go of the lock, and the clearing process holds the lock until it is done. The same
`FileLock` serialises refreshes of the one stored refresh token (`tokens.py`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from papyrus.client.sync import SyncProgress, SyncStatus

# What only the owner knows; the rest of SyncStatus comes from the shared database.
LIVE_FIELDS = (
    "connected",
    "connecting",
    "downloading",
    "download_progress",
    "uploading",
    "download_error",
    "upload_error",
)
_LOCK_RETRY = 0.02  # seconds between two tries of a lock someone else holds


class FileLock:
    """An exclusive `flock` on a file, which its holder's pid is written to.

    `flock` locks belong to an open file, so two `FileLock` objects on one path exclude each
    other even inside one process. The OS releases the lock when its process exits, however it
    exits, so a crashed holder never blocks the others."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self.held = False

    def acquire(self) -> bool:
        """Takes the lock if nobody holds it; True if this object holds it now."""
        if self.held:
            return True
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self.held = True
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)
        return True

    def wait(self, timeout: float) -> bool:
        """Takes the lock, waiting up to `timeout` seconds for its holder to let go."""
        deadline = time.monotonic() + timeout
        while not self.acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(_LOCK_RETRY)
        return True

    def holder_pid(self) -> int | None:
        """The pid the current holder wrote (None if unknown or nobody holds it)."""
        if self.held:
            return os.getpid()
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._fd is not None:
            if self.held:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
        self._fd = None
        self.held = False


class SyncLock(FileLock):
    """`<db>.sync-lock`: its holder drives sync for the database (or clears it)."""

    def __init__(self, database_path: str) -> None:
        super().__init__(database_path + ".sync-lock")


@dataclass(frozen=True)
class StopRequest:
    """A process about to clear a database asks every process connected to it to stop syncing
    (`<db>.sync-stop`, JSON). It stays posted while that process holds the sync lock; the
    others keep their connection paused meanwhile and, once it is withdrawn, resume only if
    the database still belongs to the account they sync for."""

    pid: int
    nonce: str
    action: str
    """What the requester is doing ("signing out", "signing in as another account", ...)."""


class StopRequests:
    """`<db>.sync-stop`: at most one posted request; a requester that died counts as none."""

    def __init__(self, database_path: str) -> None:
        self.path = Path(database_path + ".sync-stop")

    def post(self, request: StopRequest) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.{request.nonce}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": request.pid, "nonce": request.nonce, "action": request.action}, fh)
        os.replace(tmp, self.path)

    def read(self) -> StopRequest | None:
        try:
            data = json.loads(self.path.read_text())
            request = StopRequest(int(data["pid"]), str(data["nonce"]), str(data["action"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return request if pid_alive(request.pid) else None

    def withdraw(self, nonce: str) -> None:
        """Removes the posted request if it is the one with `nonce` (a later requester's
        stays)."""
        current = self.read()
        if current is not None and current.nonce != nonce:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class StatusFile:
    """`<db>.sync-status`: the owner's live status as JSON, replaced atomically."""

    def __init__(self, database_path: str) -> None:
        self.path = Path(database_path + ".sync-status")
        self._seen: tuple[int, int] | None = None

    def publish(self, status: SyncStatus) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"pid": os.getpid(), "status": status_to_json(status)}, fh)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def changed(self) -> bool:
        """Whether the file changed (or appeared or vanished) since the last call."""
        try:
            st = self.path.stat()
            mark: tuple[int, int] | None = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            mark = None
        if mark == self._seen:
            return False
        self._seen = mark
        return True

    def read(self) -> tuple[int, SyncStatus] | None:
        """The owner's pid and status, or None if no live process published one."""
        try:
            data = json.loads(self.path.read_text())
            pid = int(data["pid"])
            status = status_from_json(data["status"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (pid, status) if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status_to_json(status: SyncStatus) -> dict[str, Any]:
    progress = status.download_progress
    return {
        "connected": status.connected,
        "connecting": status.connecting,
        "downloading": status.downloading,
        "download_progress": [progress.downloaded, progress.total] if progress else None,
        "uploading": status.uploading,
        "upload_queue_size": status.upload_queue_size,
        "has_synced": status.has_synced,
        "last_synced_at": status.last_synced_at.isoformat() if status.last_synced_at else None,
        "download_error": status.download_error,
        "upload_error": status.upload_error,
    }


def status_from_json(data: dict[str, Any]) -> SyncStatus:
    progress = data.get("download_progress")
    last = data.get("last_synced_at")
    return SyncStatus(
        connected=bool(data.get("connected")),
        connecting=bool(data.get("connecting")),
        downloading=bool(data.get("downloading")),
        download_progress=SyncProgress(int(progress[0]), int(progress[1])) if progress else None,
        uploading=bool(data.get("uploading")),
        upload_queue_size=int(data.get("upload_queue_size") or 0),
        has_synced=bool(data.get("has_synced")),
        last_synced_at=datetime.fromisoformat(last) if last else None,
        download_error=data.get("download_error"),
        upload_error=data.get("upload_error"),
    )


def merge_live(local: SyncStatus, owner: SyncStatus | None) -> SyncStatus:
    """`local` with the owner's live fields (or those of nobody syncing, if `owner` is None)."""
    source = owner or SyncStatus()
    return replace(local, **{name: getattr(source, name) for name in LIVE_FIELDS})
