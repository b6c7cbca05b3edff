"""AuthProvider: the app's runtime in one object.

It decides which local database is live (the synced account database when signed in, the
guest library otherwise), connects PowerSync after sign-in, and clears synced data on logout,
offline mode, or another account signing in. None of those deletes changes that have not been
uploaded unless the caller says so (`discard_pending=True`); a session that ends by itself
(revoked, expired) keeps the account database for the same user's next sign-in. Guest records
are never merged into an account.

The one exception is an account that no longer exists (deleted here or on another device): its
database is cleared with whatever waited to upload, since there is no account left to upload
to, and `account_deletion` says how many changes that discarded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import webbrowser
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from papyrus.client.auth import ACCOUNT_DELETED, AuthApiClient, AuthRepository, User
from papyrus.client.books import DataStore, RejectionRecord
from papyrus.client.config import PapyrusApiConfig
from papyrus.client.connector import PapyrusConnector
from papyrus.client.database import PowerSyncDatabase, SyncStopped
from papyrus.client.errors import (
    OfflineModeError,
    PendingChangesError,
    SignedOutError,
    SyncBusyError,
    TransientError,
)
from papyrus.client.library import Library
from papyrus.client.schema import ACCOUNT_SCHEMA, GUEST_SCHEMA, Schema
from papyrus.client.sync import SyncOptions, SyncStatus
from papyrus.client.tokens import TokenStore

log = logging.getLogger(__name__)

_META_TABLE = "papyrus_client_meta"  # a plain SQLite table: powersync_clear never touches it


class AuthState(StrEnum):
    SIGNED_OUT = "signed_out"
    SIGNED_IN = "signed_in"
    OFFLINE = "offline"


@dataclass(frozen=True)
class SignOutResult:
    """What signing out could do on the server. The local sign-out always happens."""

    server_error: str | None = None
    """Why the server session could not be ended (it stays valid there until it expires)."""

    @property
    def server_session_ended(self) -> bool:
        return self.server_error is None


@dataclass(frozen=True)
class SyncResult:
    """The outcome of `AuthProvider.sync_now()`."""

    synced: bool
    """Every queued change was uploaded (or refused) and a checkpoint covering the last upload
    has been applied."""
    error: str | None = None
    """Why not, when not synced."""
    unreachable: str | None = None
    """"api" or "sync_service" when that one could not be reached (or was not ready)."""
    timed_out: bool = False
    rejections: tuple[RejectionRecord, ...] = ()
    """Changes the server refused during this sync; its version of those rows was kept."""


@dataclass(frozen=True)
class AccountDeletion:
    """The signed-in account was deleted (from this device or another) and its data removed
    from this device."""

    email: str | None
    discarded_changes: int
    """Local changes that had not been uploaded and were discarded with the account's data:
    there is no account left to upload them to."""

    def describe(self) -> str:
        whose = f"The account {self.email}" if self.email else "The account"
        text = f"{whose} has been deleted; its data was removed from this device."
        if self.discarded_changes:
            text += (
                f" {self.discarded_changes} change(s) made here had not been uploaded and were"
                " discarded, because the account no longer exists."
            )
        return text


@dataclass(frozen=True)
class SignedOutElsewhere:
    """Another process of this device signed the account out, or signed in as another account,
    and cleared the account database: this process stopped syncing it and forgot its session
    (the guest library is live here now)."""

    email: str | None
    pid: int | None
    """The process that did it, when it said so."""
    action: str | None
    """What it was doing: "signing out", "signing in as another account", ..."""

    def describe(self) -> str:
        who = self.email or "The account"
        by = f" by process {self.pid}" if self.pid is not None else " by another process"
        doing = f" ({self.action})" if self.action else ""
        return f"{who} was signed out on this device{by}{doing}; this process stopped syncing it."


# How long a health probe may take, and how often a sync that keeps failing probes again.
_PROBE_TIMEOUT = 3.0
_PROBE_INTERVAL = 2.0


class PowerSyncService:
    """The account database and its connection to the sync service."""

    def __init__(
        self,
        config: PapyrusApiConfig,
        auth: AuthRepository,
        options: SyncOptions | None = None,
        schema: Schema = ACCOUNT_SCHEMA,
        *,
        validate_writes: bool = True,
    ) -> None:
        self.config = config
        self.auth = auth
        self.options = options
        self.schema = schema
        self.validate_writes = validate_writes
        self._database: PowerSyncDatabase | None = None
        self._lock = threading.RLock()
        self._user_id: str | None = None
        """The account this process opened the database for (`open_for`), until it is cleared
        here or another process clears it."""
        self._left_lock = threading.Lock()
        self._left_listeners: list[Callable[[SignedOutElsewhere, str], None]] = []

    @property
    def database(self) -> PowerSyncDatabase:
        with self._lock:
            if self._database is None:
                db = PowerSyncDatabase(
                    self.config.account_database_path,
                    self.schema,
                    core_extension=self.config.core_extension_path,
                    validate_writes=self.validate_writes,
                )
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {_META_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
                )
                db.on_sync_stopped(self._sync_stopped)
                db.on_change(self._meta_changed, [_META_TABLE])
                self._database = db
            return self._database

    def owner(self) -> dict[str, Any] | None:
        return _owner(self.database)

    def on_account_left(
        self, listener: Callable[[SignedOutElsewhere, str], None]
    ) -> Callable[[], None]:
        """`listener(notice, user_id)` once the database stops belonging to the account this
        process opened it for, because another process cleared it (`notice.pid`, `.action`
        when it said so; `email` is left to the caller). Called from a background thread."""
        self._left_listeners.append(listener)
        return lambda: (
            self._left_listeners.remove(listener) if listener in self._left_listeners else None
        )

    def exclusive(self, action: str) -> AbstractContextManager[None]:
        """No process syncs the account database during the block (see
        `PowerSyncDatabase.exclusive`): for changing it wholesale."""
        if self._database is None and not self.config.account_database_path.exists():
            return contextlib.nullcontext()
        return self.database.exclusive(action)

    def has_data(self) -> bool:
        """Whether the account database exists and belongs to someone (without creating it)."""
        if self._database is None and not self.config.account_database_path.exists():
            return False
        return self.owner() is not None

    def pending_changes(self) -> int:
        """Local changes that have not reached the server (without creating the database)."""
        if self._database is None and not self.config.account_database_path.exists():
            return 0
        return self.database.upload_queue_size()

    def pending_error(self, action: str, user: User | None = None) -> PendingChangesError | None:
        """The refusal for `action` if it would delete pending changes: those of anyone, or,
        given `user`, of an account other than `user` (theirs stay for them)."""
        with self._lock:
            count = self.pending_changes()
            if not count:
                return None
            owner = self.owner()
            if user is not None and owner is not None and owner.get("id") == user.id:
                return None
            return PendingChangesError(count, owner.get("email") if owner else None, action)

    def open_for(self, user: User, *, discard_pending: bool = False) -> PowerSyncDatabase:
        """The account database for `user`. Another account's data is cleared first (no process
        syncs it meanwhile); if it holds changes not yet uploaded, that needs
        `discard_pending`."""
        with self._lock:
            db = self.database
            owner = self.owner()
            if owner is not None and owner.get("id") != user.id:
                log.info("a different account signed in; clearing the account database")
                action = "signing in as another account"
                with db.exclusive(action):
                    self.clear(discard_pending=discard_pending, action=action)
                    self._claim(db, user)
            else:
                self._claim(db, user)
            return db

    def _claim(self, db: PowerSyncDatabase, user: User) -> None:
        value = json.dumps({"id": user.id, "email": user.email, "display_name": user.display_name})
        db.execute(
            f"INSERT OR REPLACE INTO {_META_TABLE} (key, value) VALUES ('owner', ?)", (value,)
        )
        self._user_id = user.id

    def connect(self) -> None:
        """Syncs for the account the database was opened for, for as long as it is theirs:
        another process clearing it (or handing it to another account) ends the connection."""
        db = self.database
        user_id = self._user_id

        def still_valid() -> bool:
            return user_id is not None and (_owner(db) or {}).get("id") == user_id

        connector = PapyrusConnector(self.auth, self.config.powersync_url)
        db.connect(connector, self.options, still_valid=still_valid)

    def disconnect(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.disconnect()

    def clear(self, *, discard_pending: bool = False, action: str = "clearing") -> int:
        """Stops syncing and deletes every synced row, queued write and local rejection, so
        that they are gone from the file too (not only unlinked). Raises PendingChangesError,
        deleting nothing, if changes wait to upload and `discard_pending` is not set: the check
        and the clear are one transaction, so a write cannot slip in between. Returns how many
        queued changes were discarded."""
        with self._lock:
            db = self.database
            with db.exclusive(action):
                previous, self._user_id = self._user_id, None
                try:
                    with db.write_transaction():
                        discarded = self.pending_changes()
                        if not discard_pending:
                            refusal = self.pending_error(action)
                            if refusal is not None:
                                raise refusal
                        db.disconnect_and_clear(clear_local=True)
                        db.execute(f"DELETE FROM {_META_TABLE} WHERE key = 'owner'")
                except BaseException:
                    self._user_id = previous
                    raise
                if not db.scrub():
                    log.warning(
                        "another process kept the account database's WAL from being emptied"
                    )
            return discarded

    def close(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.close()
                self._database = None

    def _sync_stopped(self, stopped: SyncStopped) -> None:
        self._left(SignedOutElsewhere(None, stopped.pid, stopped.action))

    def _meta_changed(self, _tables: frozenset[str]) -> None:
        """Another process changed whose database this is. A connected database learns it from
        its connection's own check (`_sync_stopped`, which knows who paused it); one that is
        not connected learns it here."""
        db, user_id = self._database, self._user_id
        if db is None or user_id is None or db.connected:
            return
        if (_owner(db) or {}).get("id") != user_id:
            request = db.stop_request()
            pid, action = (request.pid, request.action) if request else (None, None)
            self._left(SignedOutElsewhere(None, pid, action))

    def _left(self, notice: SignedOutElsewhere) -> None:
        with self._left_lock:
            user_id, self._user_id = self._user_id, None
        if user_id is None:
            return  # cleared here, or already told
        for listener in list(self._left_listeners):
            try:
                listener(notice, user_id)
            except Exception:
                log.exception("an account-left listener failed")


def _owner(db: PowerSyncDatabase) -> dict[str, Any] | None:
    """Whose data the account database holds (read without the service's lock: the sync
    check and change listeners call it from the database's poller thread)."""
    row = db.get_optional(f"SELECT value FROM {_META_TABLE} WHERE key = 'owner'")
    owner: dict[str, Any] | None = json.loads(row["value"]) if row else None
    return owner


class AuthProvider:
    """Signs users in and out and hands out the live library.

    `bootstrap()` restores a stored session (refreshing it with the server); `library` is the
    `Library` of whichever database is live. `schema` (the account database) and
    `guest_schema` let an app add tables of its own to the two schemas. Writes are checked
    against the sync contract before they are queued; `validate_writes=False` leaves that to
    the server (see `PowerSyncDatabase`).
    """

    def __init__(
        self,
        config: PapyrusApiConfig,
        *,
        tokens: TokenStore | None = None,
        http: httpx.Client | None = None,
        sync_options: SyncOptions | None = None,
        open_browser: Callable[[str], Any] = webbrowser.open,
        auto_connect: bool = True,
        schema: Schema = ACCOUNT_SCHEMA,
        guest_schema: Schema = GUEST_SCHEMA,
        validate_writes: bool = True,
    ) -> None:
        _require_tables(schema, "schema", "books", "upload_rejections")
        _require_tables(guest_schema, "guest_schema", "books")
        self.config = config
        self.guest_schema = guest_schema
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.api = AuthApiClient(config.api_url, http=http)
        self.auth = AuthRepository(
            self.api,
            tokens or TokenStore.for_config(config),
            client_type=config.client_type,
            device_label=config.device_label,
        )
        self.validate_writes = validate_writes
        self.powersync = PowerSyncService(
            config, self.auth, sync_options, schema, validate_writes=validate_writes
        )
        self.open_browser = open_browser
        self.auto_connect = auto_connect
        self.state = AuthState.SIGNED_OUT
        self.user: User | None = None
        self._guest: PowerSyncDatabase | None = None
        self._lock = threading.RLock()
        self._signed_out = threading.Event()
        self._deleting = False
        self.account_deletion: AccountDeletion | None = None
        """Set once the signed-in account turned out to be deleted (see `AccountDeletion`)."""
        self.signed_out_elsewhere: SignedOutElsewhere | None = None
        """Set when another process of this device signed this one's account out (or in as
        another account); see `on_signed_out_elsewhere`."""
        self._elsewhere_listeners: list[Callable[[SignedOutElsewhere], None]] = []
        self.auth.on_signed_out(self._session_ended)
        self.powersync.on_account_left(self._account_left)

    # -- state and databases ----------------------------------------------------------------

    @property
    def offline_mode(self) -> bool:
        return bool(self._settings().get("offline"))

    @property
    def guest_database(self) -> PowerSyncDatabase:
        with self._lock:
            if self._guest is None:
                self._guest = PowerSyncDatabase(
                    self.config.guest_database_path,
                    self.guest_schema,
                    core_extension=self.config.core_extension_path,
                    validate_writes=self.validate_writes,
                )
            return self._guest

    @property
    def database(self) -> PowerSyncDatabase:
        """The live database: the account's when signed in, the guest library otherwise."""
        if self.state is AuthState.SIGNED_IN:
            return self.powersync.database
        return self.guest_database

    @property
    def library(self) -> Library:
        """The live database's library: its books (`library.add("Dune")`) and a repository
        per table (`library.shelves`, `library.highlights`, ...)."""
        owner = self.user.id if self.state is AuthState.SIGNED_IN and self.user else None
        return Library(self.database, owner, device_label=self.config.device_label)

    @property
    def data_store(self) -> DataStore:
        return DataStore(self.database)

    # -- lifecycle ------------------------------------------------------------------------------

    def bootstrap(self, *, verify: bool = True) -> AuthState:
        """Restores the previous session. With `verify`, refreshes it with the server (a refused
        refresh signs out; an unreachable server keeps the session for later)."""
        with self._lock:
            if self.offline_mode:
                self.state = AuthState.OFFLINE
                return self.state
            if not self.auth.has_stored_session():
                self.state = AuthState.SIGNED_OUT
                return self.state
            user = None
            if verify:
                try:
                    self.auth.refresh()
                    user = self.auth.user
                except SignedOutError:
                    self.state = AuthState.SIGNED_OUT
                    return self.state
                except TransientError as exc:
                    log.info("cannot reach the server (%s); keeping the stored session", exc)
            if user is None:
                owner = self.powersync.owner()
                user = (
                    User(owner["id"], owner.get("email", ""), owner.get("display_name", ""))
                    if owner
                    else None
                )
            if user is None:  # a stored token but no record of whose: ask the server
                user = self.auth.me()
            self._signed_in(user)
            return self.state

    def register(
        self, email: str, password: str, display_name: str, *, discard_pending: bool = False
    ) -> User:
        """Creates an account and signs it in. A new account is never the one whose changes
        may wait to upload here, so that is refused up front unless `discard_pending`."""
        self._require_online()
        if not discard_pending:
            refusal = self.powersync.pending_error("signing in as a new account")
            if refusal is not None:
                raise refusal
        with ExitStack() as held:
            check = self._sign_in_check(discard_pending, held)
            user = self.auth.register(email, password, display_name, check=check)
            return self._signed_in(user, discard_pending)

    def sign_in(self, email: str, password: str, *, discard_pending: bool = False) -> User:
        """Signs in, replacing the current session only once the server accepted this one.
        Signing in as another account than the one whose changes wait to upload here raises
        PendingChangesError (nothing changes) unless `discard_pending`."""
        self._require_online()
        with ExitStack() as held:
            check = self._sign_in_check(discard_pending, held)
            return self._signed_in(self.auth.login(email, password, check=check), discard_pending)

    def sign_in_with_google(
        self, *, port: int | None = None, timeout: float = 300.0, discard_pending: bool = False
    ) -> User:
        self._require_online()
        with ExitStack() as held:
            check = self._sign_in_check(discard_pending, held)
            kwargs: dict[str, Any] = {"timeout": timeout, "check": check}
            if port is not None:
                kwargs["port"] = port
            user = self.auth.sign_in_with_google(self.open_browser, **kwargs)
            return self._signed_in(user, discard_pending)

    def pending_changes(self) -> int:
        """Changes made in the account database that have not reached the server yet (they
        survive a session that ended by itself, for the same user's next sign-in)."""
        return self.powersync.pending_changes()

    # -- the account lifecycle (docs/account-lifecycle.md) ---------------------------------

    def verify_email(self, token: str) -> dict[str, Any]:
        """Confirms an address with the token of its mailed link (no sign-in needed)."""
        return self.api.verify_email(token)

    def resend_verification(self) -> str:
        self._require_signed_in()
        return self.auth.resend_verification()

    def forgot_password(self, email: str) -> str:
        """Asks for a reset link; the server answers the same whether or not the account
        exists, so the message says "if"."""
        self._require_online()
        return self.api.forgot_password(email)

    def reset_password(
        self, token: str, new_password: str, *, discard_pending: bool = False
    ) -> User:
        """Sets a new password with a reset link's token and signs this device in (as
        `sign_in()` does, with the same refusal to drop another account's unsent changes)."""
        self._require_online()
        with ExitStack() as held:
            check = self._sign_in_check(discard_pending, held)
            user = self.auth.reset_password(token, new_password, check=check)
            return self._signed_in(user, discard_pending)

    def change_password(self, current_password: str, new_password: str) -> int:
        """Returns how many other sessions (devices) were signed out; this one stays."""
        self._require_signed_in()
        return self.auth.change_password(current_password, new_password)

    def change_email(self, new_email: str, password: str | None = None) -> str:
        """Mails a confirmation link to `new_email`; `password` may be left out right after a
        Google sign-in."""
        self._require_signed_in()
        return self.auth.change_email(new_email, password)

    def confirm_email_change(self, token: str) -> dict[str, Any]:
        return self.api.confirm_email_change(token)

    def delete_account(self, password: str | None = None) -> AccountDeletion:
        """Deletes the signed-in account on the server (needs its password, or a Google sign-in
        within the last few minutes), then signs out and clears this device's copy of its data,
        including changes not uploaded yet (counted in the result). Other devices find out on
        their next refresh. Nothing changes here if the server refuses."""
        with self._lock:
            self._require_signed_in()
            email = self.user.email if self.user else None
            self._deleting = True
            try:
                self.auth.delete_account(password)
                self.auth.sign_out_locally(ACCOUNT_DELETED)
                return self._clear_deleted_account(email)
            finally:
                self._deleting = False

    def export_account(self, path: Path) -> int:
        """Writes everything the server holds about the account to `path` (JSON, 0600)."""
        self._require_signed_in()
        return self.auth.export_account(path)

    def sign_out(
        self, *, all_devices: bool = False, discard_pending: bool = False
    ) -> SignOutResult:
        """Ends the session and clears the account database; the guest library stays.

        With changes still waiting to upload this raises PendingChangesError and changes
        nothing, unless `discard_pending`. Also clears an account database kept from a session
        that ended by itself. The local sign-out happens even when the server cannot be
        reached; the result says so.

        Another process of this device that syncs the account database is asked to stop first
        (it goes on signed out); if it does not within 30 s this raises `SyncBusyError` naming
        it, and nothing changes."""
        with self._lock:
            self._refuse_if_pending("signing out", discard_pending)
            with self.powersync.exclusive("signing out"):
                problem = None
                if self.state is AuthState.SIGNED_IN or self.auth.has_stored_session():
                    problem = self.auth.logout(all_devices=all_devices)
                self._clear_account(discard_pending)
            return SignOutResult(problem)

    def set_offline_mode(self, enabled: bool, *, discard_pending: bool = False) -> SignOutResult:
        """Offline mode: no Papyrus tokens, no sync, no synced data; the guest library is live.
        Turning it on signs out as `sign_out()` does (and refuses as it does while changes wait
        to upload). Turning it off leaves the client signed out, ready to sign in."""
        with self._lock:
            result = SignOutResult()
            if enabled:
                action = "turning offline mode on"
                self._refuse_if_pending(action, discard_pending)
                with self.powersync.exclusive(action):
                    result = SignOutResult(self.auth.logout())
                    self._clear_account(discard_pending)
                self.state = AuthState.OFFLINE
            else:
                self.state = AuthState.SIGNED_OUT
            self._save_settings(offline=enabled)
            return result

    def sync_now(
        self,
        timeout: float = 120.0,
        *,
        on_status: Callable[[SyncStatus], None] | None = None,
    ) -> SyncResult:
        """Uploads every queued change and downloads everything new; returns as soon as a
        checkpoint covering the last upload has been applied (`PowerSyncDatabase.wait_for_sync`).

        Fails fast, naming it, when the Papyrus API or the sync service cannot be reached: both
        are probed before connecting and again whenever the sync loop reports an error.
        Connects for the call if not connected. `on_status` sees every status change."""
        if self.state is not AuthState.SIGNED_IN:
            if self.state is AuthState.OFFLINE:
                raise OfflineModeError("offline mode is on; turn it off and sign in to sync")
            raise SignedOutError("not signed in")
        db = self.powersync.database
        before = {r.id for r in DataStore(db).rejections()}
        down = self._unreachable()
        if down is not None:
            return SyncResult(False, down[1], unreachable=down[0])
        failure: list[tuple[str | None, str]] = []
        probed_at = 0.0

        def abort(status: SyncStatus) -> bool:
            nonlocal probed_at
            if self.state is not AuthState.SIGNED_IN:
                failure.append((None, "the session has ended; sign in again"))
                return True
            if status.last_error and time.monotonic() - probed_at >= _PROBE_INTERVAL:
                probed_at = time.monotonic()
                down = self._unreachable()
                if down is not None:
                    failure.append(down)
                    return True
            return False

        unsubscribe = db.on_status_change(on_status) if on_status is not None else None
        connected_here = not db.connected
        if connected_here:
            self.powersync.connect()
        try:
            synced = db.wait_for_sync(timeout, abort=abort)
        finally:
            if unsubscribe is not None:
                unsubscribe()
            if connected_here:
                self.powersync.disconnect()
        rejections = tuple(r for r in DataStore(db).rejections() if r.id not in before)
        if synced:
            return SyncResult(True, rejections=rejections)
        if failure:
            service, reason = failure[0]
            return SyncResult(False, reason, unreachable=service, rejections=rejections)
        waiting = db.status.last_error or "still waiting for the sync service to confirm"
        return SyncResult(
            False,
            f"not finished after {timeout:g} s: {waiting}",
            timed_out=True,
            rejections=rejections,
        )

    def on_signed_out_elsewhere(
        self, listener: Callable[[SignedOutElsewhere], None]
    ) -> Callable[[], None]:
        """`listener(notice)` when another process of this device signs this process's account
        out or signs in as another account: by then this process has stopped syncing, forgotten
        the session and switched to the guest library. Called from a background thread."""
        self._elsewhere_listeners.append(listener)
        return lambda: (
            self._elsewhere_listeners.remove(listener)
            if listener in self._elsewhere_listeners
            else None
        )

    def wait_signed_out(self, timeout: float | None = None) -> bool:
        """Waits until a session that ended in the background has been disconnected."""
        return self._signed_out.wait(timeout)

    def close(self) -> None:
        with self._lock:
            self.powersync.close()
            if self._guest is not None:
                self._guest.close()
                self._guest = None
            self.api.close()

    def __enter__(self) -> AuthProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _require_online(self) -> None:
        if self.offline_mode:
            raise OfflineModeError("offline mode is on; turn it off to sign in")

    def _require_signed_in(self) -> None:
        if self.state is AuthState.OFFLINE:
            raise OfflineModeError("offline mode is on; turn it off and sign in first")
        if self.state is not AuthState.SIGNED_IN:
            raise SignedOutError("not signed in")

    def _refuse_if_pending(self, action: str, discard_pending: bool) -> None:
        if not discard_pending:
            refusal = self.powersync.pending_error(action)
            if refusal is not None:
                raise refusal

    def _sign_in_check(self, discard_pending: bool, held: ExitStack) -> Callable[[User], None]:
        """Runs once the server accepted a sign-in, before it replaces the current session:
        refuses another account while this one's changes wait to upload, and stops syncing
        under the old session. For another account, every process of this device stops
        syncing the account database before the new session is stored, and none resumes
        until `held` closes (the sign-in has cleared it by then); a process that does not
        stop refuses the sign-in (`SyncBusyError`)."""

        def check(user: User) -> None:
            action = "signing in as another account"
            if not discard_pending:
                refusal = self.powersync.pending_error(action, user)
                if refusal is not None:
                    raise refusal
            owner = self.powersync.owner() if self.powersync.has_data() else None
            if owner is not None and owner.get("id") != user.id:
                held.enter_context(self.powersync.exclusive(action))
            self.powersync.disconnect()

        return check

    def _signed_in(self, user: User, discard_pending: bool = False) -> User:
        with self._lock:
            self._signed_out.clear()
            try:
                self.powersync.open_for(user, discard_pending=discard_pending)
            except PendingChangesError:
                # A write slipped in after the check: keep it, drop the new session.
                self.auth.logout()
                self.state = AuthState.SIGNED_OUT
                raise
            self.user = user
            self.state = AuthState.SIGNED_IN
            if self.auto_connect:
                self.powersync.connect()
            return user

    def _clear_account(self, discard_pending: bool) -> None:
        """After the session is gone: clear its data (a write that slipped in after the check
        still refuses, and is kept as after a revoked session)."""
        self.user = None
        if self.state is AuthState.SIGNED_IN:
            self.state = AuthState.SIGNED_OUT
        self._signed_out.set()
        if self.powersync.has_data() or self.powersync.pending_changes():
            self.powersync.clear(discard_pending=discard_pending)

    def _session_ended(self, reason: str) -> None:
        """A session ended by itself (revoked, expired): stop syncing, keep the account
        database and its queue for the same user's next sign-in."""
        if reason == "logout" or (reason == ACCOUNT_DELETED and self._deleting):
            return  # sign_out(), set_offline_mode() and delete_account() clean up themselves
        email = self.user.email if self.user else None
        self.state = AuthState.SIGNED_OUT
        self.user = None
        if reason == ACCOUNT_DELETED:
            log.info("the account was deleted; signing out and clearing its data")

            def finish() -> None:
                try:
                    self._clear_deleted_account(email)
                except SyncBusyError as exc:  # kept until `logout` or a sign-in clears it
                    log.warning("the deleted account's data stays on this device: %s", exc)
        else:
            log.info("the session ended (%s); signing out, keeping unsent changes", reason)
            finish = self._disconnect_after_session_end
        if threading.current_thread() is threading.main_thread():
            finish()
        else:  # possibly inside the sync loop, which the disconnect must stop and wait for
            threading.Thread(target=finish, name="papyrus-signout").start()

    def _clear_deleted_account(self, email: str | None) -> AccountDeletion:
        """The account is gone: its data goes, unsent changes included (they cannot be
        uploaded anywhere), and `account_deletion` says how many there were."""
        with self._lock:
            self.state = AuthState.SIGNED_OUT
            self.user = None
            owner = self.powersync.owner() if self.powersync.has_data() else None
            pending = self.powersync.pending_changes()
            if owner is None and not pending and self.account_deletion is not None:
                self._signed_out.set()
                return self.account_deletion  # already cleared (two threads found out)
            discarded = 0
            if owner is not None or pending:
                discarded = self.powersync.clear(discard_pending=True)
            deletion = AccountDeletion(email or (owner or {}).get("email"), discarded)
            self.account_deletion = deletion
            log.warning("%s", deletion.describe())
            self._signed_out.set()
            return deletion

    def _account_left(self, notice: SignedOutElsewhere, user_id: str) -> None:
        """Another process cleared the account database this process had open for `user_id`:
        its sync has stopped; forget the session in memory (the stored one is that process's
        business) and make the guest library live. No lock: this runs on the poller thread
        while the main thread may hold ours."""
        user = self.user
        if self.state is not AuthState.SIGNED_IN or user is None or user.id != user_id:
            return
        notice = SignedOutElsewhere(user.email, notice.pid, notice.action)
        log.info("%s", notice.describe())
        self.state = AuthState.SIGNED_OUT
        self.user = None
        self.auth.forget()
        self.signed_out_elsewhere = notice
        self._signed_out.set()
        for listener in list(self._elsewhere_listeners):
            try:
                listener(notice)
            except Exception:
                log.exception("a signed-out-elsewhere listener failed")

    def _disconnect_after_session_end(self) -> None:
        self.powersync.disconnect()
        self._signed_out.set()

    def _unreachable(self) -> tuple[str, str] | None:
        """("api" or "sync_service", why) for the first of the two that cannot be reached or
        answers its health check with a server error, or None when both answer."""
        api, sync = self.config.api_url, self.config.powersync_url
        checks = (
            ("api", f"the Papyrus API at {api}", f"{api}/health/ready"),
            ("sync_service", f"the sync service at {sync}", f"{sync}/probes/liveness"),
        )
        with httpx.Client(timeout=_PROBE_TIMEOUT) as http:
            for key, name, url in checks:
                try:
                    resp = http.get(url)
                except httpx.HTTPError as exc:
                    return key, f"cannot reach {name} ({type(exc).__name__}: {exc})"
                if resp.status_code >= 500:  # a 4xx (say, a proxy without the route) answers
                    return key, f"{name} is not ready (HTTP {resp.status_code})"
        return None

    def _settings_path(self) -> Path:
        return self.config.data_dir / "client-settings.json"

    def _settings(self) -> dict[str, Any]:
        try:
            settings: dict[str, Any] = json.loads(self._settings_path().read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return settings

    def _save_settings(self, **changes: Any) -> None:
        settings = {**self._settings(), **changes}
        self._settings_path().write_text(json.dumps(settings))


def _require_tables(schema: Schema, what: str, *names: str) -> None:
    """The library and the upload connector rely on these tables; extend the default schemas
    (`Schema([*ACCOUNT_SCHEMA.tables, Table(...)])`) rather than replace them."""
    visible = {t.visible_name for t in schema.tables}
    missing = [n for n in names if n not in visible]
    if missing:
        raise ValueError(f"{what} lacks the table(s) {', '.join(missing)} the client needs")
