"""Every exception the client raises, in one place.

The tree follows who can act on it: `CoreExtensionError` is a setup problem (fix the install),
`ApiError` is the server saying no (read `code`), `TransientError` means "try again later"
(the sync loop does), and `SignedOutError` means the user must sign in again.
"""

from __future__ import annotations

from typing import Any


class PapyrusClientError(Exception):
    """Base class of every error raised by `papyrus.client`."""


class ConfigurationError(PapyrusClientError, ValueError):
    """A setting is wrong (an environment variable, a path, a URL): fix the configuration."""


class LocalDatabaseError(PapyrusClientError):
    """A local database file cannot be opened or used (damaged, not a database, no access)."""


class CoreExtensionError(PapyrusClientError):
    """The PowerSync core extension is missing, the wrong build, or too old."""


class ApiError(PapyrusClientError):
    """The Papyrus API answered with its error shape `{"error": {"code", "message", "details"}}`."""

    def __init__(self, status_code: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{message} ({code}, HTTP {status_code})")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details

    @property
    def is_unauthorized(self) -> bool:
        return self.status_code == 401


class TransientError(PapyrusClientError):
    """The server could not be reached or failed temporarily (network, 5xx, 429): retry later.

    When the server answered, `status_code`, `code`, `details` carry its error shape and
    `retry_after` how many seconds it asked to wait (429 `Retry-After`)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.details = details
        self.retry_after = retry_after


class SignedOutError(PapyrusClientError):
    """No usable session: the user never signed in, signed out, or the session was revoked."""


class AccountDeletedError(SignedOutError):
    """The account no longer exists on the server (deleted, from this device or another).

    The client has signed out and cleared its copy of the account's data: this is the one case
    where changes not yet uploaded cannot be kept, since there is no account left to upload
    them to. `discarded` says how many there were (also `AuthProvider.account_deletion`)."""

    def __init__(self, message: str, discarded: int = 0) -> None:
        super().__init__(message)
        self.discarded = discarded


class OfflineModeError(PapyrusClientError):
    """The operation needs the server, but the client is in offline mode."""


class SignInError(PapyrusClientError):
    """A browser sign-in did not complete (cancelled, refused, or timed out)."""


class NotFoundError(PapyrusClientError):
    """A local record with the given id does not exist (or a `get()` query returned no row)."""


class PendingChangesError(PapyrusClientError):
    """Refused: the step would delete local changes that have not reached the server yet.

    Upload them first (`AuthProvider.sync_now()`, signed in as `owner_email`), or repeat the
    call with `discard_pending=True` to delete them deliberately."""

    def __init__(self, count: int, owner_email: str | None = None, action: str = "") -> None:
        whose = f" of {owner_email}" if owner_email else ""
        doing = f"; {action} would delete them" if action else ""
        super().__init__(
            f"{count} change(s){whose} have not been uploaded to the server yet{doing}"
        )
        self.count = count
        self.owner_email = owner_email


class SyncBusyError(PapyrusClientError):
    """Refused: another process syncs this device's account database and did not stop when
    asked, so it could not be cleared (for a sign-out or another account); nothing changed.

    Stop process `pid` (or let its upload finish) and try again."""

    def __init__(self, pid: int | None, action: str, timeout: float) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"cannot finish {action}: {who} syncs this device's account database and did not "
            f"stop within {timeout:g} s (it may be uploading); nothing was changed. Stop that "
            "process and try again"
        )
        self.pid = pid
        self.action = action


class TransactionTooLargeError(PapyrusClientError):
    """A local transaction queued more for upload than the server accepts in one transaction
    (or one change larger than one request); it was rolled back, so nothing of it was written."""

    def __init__(
        self,
        message: str,
        *,
        operations: int,
        size_bytes: int,
        max_operations: int,
        max_bytes: int,
    ) -> None:
        super().__init__(message)
        self.operations = operations
        self.size_bytes = size_bytes
        self.max_operations = max_operations
        self.max_bytes = max_bytes
