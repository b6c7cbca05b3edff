"""AuthProvider: the app's runtime in one object.

It decides which local database is live (the synced account database when signed in, the
guest library otherwise), connects PowerSync after sign-in, and clears synced data when the
session ends or another account signs in. Guest records are never merged into an account.
"""

from __future__ import annotations

import json
import logging
import threading
import webbrowser
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from papyrus.client.auth import AuthApiClient, AuthRepository, User
from papyrus.client.books import BookRepository, DataStore
from papyrus.client.config import PapyrusApiConfig
from papyrus.client.connector import PapyrusConnector
from papyrus.client.database import PowerSyncDatabase
from papyrus.client.errors import OfflineModeError, SignedOutError, TransientError
from papyrus.client.schema import ACCOUNT_SCHEMA, GUEST_SCHEMA, Schema
from papyrus.client.sync import SyncOptions
from papyrus.client.tokens import TokenStore

log = logging.getLogger(__name__)

_META_TABLE = "papyrus_client_meta"  # a plain SQLite table: powersync_clear never touches it


class AuthState(StrEnum):
    SIGNED_OUT = "signed_out"
    SIGNED_IN = "signed_in"
    OFFLINE = "offline"


class PowerSyncService:
    """The account database and its connection to the sync service."""

    def __init__(
        self,
        config: PapyrusApiConfig,
        auth: AuthRepository,
        options: SyncOptions | None = None,
        schema: Schema = ACCOUNT_SCHEMA,
    ) -> None:
        self.config = config
        self.auth = auth
        self.options = options
        self.schema = schema
        self._database: PowerSyncDatabase | None = None
        self._lock = threading.RLock()

    @property
    def database(self) -> PowerSyncDatabase:
        with self._lock:
            if self._database is None:
                db = PowerSyncDatabase(
                    self.config.account_database_path,
                    self.schema,
                    core_extension=self.config.core_extension_path,
                )
                db.execute(
                    f"CREATE TABLE IF NOT EXISTS {_META_TABLE} (key TEXT PRIMARY KEY, value TEXT)"
                )
                self._database = db
            return self._database

    def owner(self) -> dict[str, Any] | None:
        row = self.database.get_optional(f"SELECT value FROM {_META_TABLE} WHERE key = 'owner'")
        return json.loads(row["value"]) if row else None

    def open_for(self, user: User) -> PowerSyncDatabase:
        """The account database for `user`; another account's synced data is wiped first."""
        with self._lock:
            db = self.database
            owner = self.owner()
            if owner is not None and owner.get("id") != user.id:
                log.info("a different account signed in; clearing the account database")
                self.clear()
            value = json.dumps(
                {"id": user.id, "email": user.email, "display_name": user.display_name}
            )
            db.execute(
                f"INSERT OR REPLACE INTO {_META_TABLE} (key, value) VALUES ('owner', ?)", (value,)
            )
            return db

    def connect(self) -> None:
        self.database.connect(PapyrusConnector(self.auth, self.config.powersync_url), self.options)

    def disconnect(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.disconnect()

    def clear(self) -> None:
        """Logout: stop syncing, delete every synced row, queued write and local rejection."""
        with self._lock:
            db = self.database
            db.disconnect_and_clear(clear_local=True)
            db.execute(f"DELETE FROM {_META_TABLE} WHERE key = 'owner'")

    def close(self) -> None:
        with self._lock:
            if self._database is not None:
                self._database.close()
                self._database = None


class AuthProvider:
    """Signs users in and out and hands out the live library.

    `bootstrap()` restores a stored session (refreshing it with the server); `library` is the
    `BookRepository` of whichever database is live. `schema` (the account database) and
    `guest_schema` let an app add tables of its own to the two schemas.
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
        self.powersync = PowerSyncService(config, self.auth, sync_options, schema)
        self.open_browser = open_browser
        self.auto_connect = auto_connect
        self.state = AuthState.SIGNED_OUT
        self.user: User | None = None
        self._guest: PowerSyncDatabase | None = None
        self._lock = threading.RLock()
        self._signed_out = threading.Event()
        self.auth.on_signed_out(self._session_ended)

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
                )
            return self._guest

    @property
    def database(self) -> PowerSyncDatabase:
        """The live database: the account's when signed in, the guest library otherwise."""
        if self.state is AuthState.SIGNED_IN:
            return self.powersync.database
        return self.guest_database

    @property
    def library(self) -> BookRepository:
        owner = self.user.id if self.state is AuthState.SIGNED_IN and self.user else None
        return BookRepository(self.database, owner)

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

    def register(self, email: str, password: str, display_name: str) -> User:
        self._require_online()
        self._end_previous_session()
        return self._signed_in(self.auth.register(email, password, display_name))

    def sign_in(self, email: str, password: str) -> User:
        self._require_online()
        self._end_previous_session()
        return self._signed_in(self.auth.login(email, password))

    def sign_in_with_google(self, *, port: int | None = None, timeout: float = 300.0) -> User:
        self._require_online()
        self._end_previous_session()
        kwargs: dict[str, Any] = {"timeout": timeout}
        if port is not None:
            kwargs["port"] = port
        return self._signed_in(self.auth.sign_in_with_google(self.open_browser, **kwargs))

    def sign_out(self, *, all_devices: bool = False) -> None:
        """Ends the session and clears the account database; the guest library stays."""
        with self._lock:
            self.powersync.disconnect()
            self.auth.logout(all_devices=all_devices)
            self._clear_account()

    def set_offline_mode(self, enabled: bool) -> None:
        """Offline mode: no Papyrus tokens, no sync, no synced data; the guest library is live.
        Turning it off leaves the client signed out, ready to sign in."""
        with self._lock:
            if enabled:
                self.powersync.disconnect()
                self.auth.logout()
                self._clear_account()
                self.state = AuthState.OFFLINE
            else:
                self.state = AuthState.SIGNED_OUT
            self._save_settings(offline=enabled)

    def wait_signed_out(self, timeout: float | None = None) -> bool:
        """Waits until a session ended in the background has been cleared up."""
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

    def _end_previous_session(self) -> None:
        """Signing in over a session ends that session on the server; the account database
        is only cleared if the new user turns out to be someone else."""
        if self.state is AuthState.SIGNED_IN or self.auth.has_stored_session():
            self.powersync.disconnect()
            self.auth.logout()

    def _signed_in(self, user: User) -> User:
        with self._lock:
            self._signed_out.clear()
            self.powersync.open_for(user)
            self.user = user
            self.state = AuthState.SIGNED_IN
            if self.auto_connect:
                self.powersync.connect()
            return user

    def _clear_account(self) -> None:
        self.powersync.clear()
        self.user = None
        if self.state is AuthState.SIGNED_IN:
            self.state = AuthState.SIGNED_OUT
        self._signed_out.set()

    def _session_ended(self, reason: str) -> None:
        if reason == "logout":
            return  # sign_out() and set_offline_mode() clean up themselves
        log.info("the session ended (%s); signing out", reason)
        self.state = AuthState.SIGNED_OUT
        if threading.current_thread() is threading.main_thread():
            self._clear_account()
        else:  # possibly inside the sync loop, which the clean-up must stop and wait for
            threading.Thread(target=self._clear_account, name="papyrus-signout").start()

    def _settings_path(self) -> Path:
        return self.config.data_dir / "client-settings.json"

    def _settings(self) -> dict[str, Any]:
        try:
            return json.loads(self._settings_path().read_text())
        except (FileNotFoundError, ValueError):
            return {}

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
