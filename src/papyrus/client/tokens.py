"""TokenStore: where the refresh token lives between runs.

The refresh token goes to the OS keyring when a real backend exists, otherwise to a file only
the user can read (0600). The access token is never written anywhere: it lives in memory and a
new process gets one by refreshing.

Several processes of one device share the stored refresh token, and the server revokes a
session whose refresh token is presented twice. So every read-rotate-write of it (and every
sign-in or sign-out that replaces it) runs under `TokenStore.exclusive()`, an exclusive file
lock next to it (`<data dir>/session.lock`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from papyrus.client._interprocess import FileLock
from papyrus.client.config import PapyrusApiConfig
from papyrus.client.errors import ConfigurationError, TransientError

log = logging.getLogger(__name__)

KEYRING_SERVICE = "papyrus"
SESSION_LOCK_TIMEOUT = 60.0
"""Seconds to wait for another process's refresh (one HTTP request) before giving up."""


class SecretBackend(Protocol):
    name: str

    def get(self) -> str | None: ...
    def set(self, value: str) -> None: ...
    def delete(self) -> None: ...


class KeyringBackend:
    """One keyring entry per client data directory, so two profiles never share a session."""

    name = "keyring"

    def __init__(self, data_dir: Path) -> None:
        digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
        self.username = f"refresh-token-{digest}"

    def get(self) -> str | None:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, self.username)

    def set(self, value: str) -> None:
        import keyring

        keyring.set_password(KEYRING_SERVICE, self.username, value)

    def delete(self) -> None:
        import keyring
        import keyring.errors

        with contextlib.suppress(keyring.errors.PasswordDeleteError):
            keyring.delete_password(KEYRING_SERVICE, self.username)


class FileBackend:
    """A file created with mode 0600 inside a 0700 directory, replaced atomically."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def get(self) -> str | None:
        try:
            value = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return value or None

    def set(self, value: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value)
        os.replace(tmp, self.path)

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def keyring_usable() -> bool:
    """True when `keyring` has a real backend (not the fail or null one)."""
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
    except Exception:
        return False
    if isinstance(backend, fail.Keyring) or "null" in type(backend).__module__:
        return False
    return getattr(backend, "priority", 0) > 0


class TokenStore:
    """The session's tokens: `access_token` in memory, the refresh token persisted.

    With a `lock_path`, `exclusive()` also excludes other processes (the store of a client data
    directory always has one); without, only other threads."""

    def __init__(self, backend: SecretBackend, *, lock_path: Path | None = None) -> None:
        self.backend = backend
        self.access_token: str | None = None
        self.lock_path = Path(lock_path) if lock_path is not None else None
        self._thread_lock = threading.RLock()
        self._held: FileLock | None = None
        self._depth = 0

    @classmethod
    def for_config(cls, config: PapyrusApiConfig) -> TokenStore:
        lock = config.data_dir / "session.lock"
        file = FileBackend(config.data_dir / "refresh-token")
        if config.token_store == "file":
            return cls(file, lock_path=lock)
        if config.token_store == "keyring" and not keyring_usable():
            raise ConfigurationError(
                "PAPYRUS_TOKEN_STORE is keyring, but this system has no usable keyring backend;"
                " use PAPYRUS_TOKEN_STORE=file (or auto, which falls back to the file)"
            )
        if config.token_store == "keyring" or keyring_usable():
            return cls(KeyringBackend(config.data_dir), lock_path=lock)
        return cls(file, lock_path=lock)

    @contextlib.contextmanager
    def exclusive(self, timeout: float = SESSION_LOCK_TIMEOUT) -> Iterator[None]:
        """Holds the stored session for the block: one process, and one thread, at a time
        reads, rotates and writes the refresh token. Re-entrant within a thread. Raises
        `TransientError` if another process held it for `timeout` seconds."""
        if not self._thread_lock.acquire(timeout=timeout):
            raise TransientError(f"another thread held the session lock for {timeout:g} s")
        try:
            if self._depth == 0 and self.lock_path is not None:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                lock = FileLock(self.lock_path)
                if not lock.wait(timeout):
                    pid = lock.holder_pid()
                    lock.release()
                    raise TransientError(
                        f"process {pid} held this device's session lock ({self.lock_path}) "
                        f"for {timeout:g} s; try again"
                    )
                self._held = lock
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._held is not None:
                    self._held.release()
                    self._held = None
        finally:
            self._thread_lock.release()

    def load_refresh_token(self) -> str | None:
        return self.backend.get()

    def save_refresh_token(self, token: str) -> None:
        self.backend.set(token)

    def clear(self) -> None:
        self.access_token = None
        try:
            self.backend.delete()
        except Exception:  # a locked keyring must not keep a signed-out user signed in
            log.warning("could not delete the stored refresh token", exc_info=True)
