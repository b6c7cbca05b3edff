"""Talking to the Papyrus API: AuthApiClient (typed HTTP calls), AuthRepository (owns the
session: single-flight refresh, retry once after 401, sign-out), and the Google browser flow."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import logging
import os
import secrets
import threading
import time
import urllib.parse
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from papyrus.client.errors import (
    AccountDeletedError,
    ApiError,
    SignedOutError,
    SignInError,
    TransientError,
)
from papyrus.client.tokens import TokenStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# An access token this close to its expiry (at most half its lifetime) is refreshed before use,
# which saves the round trip of a 401.
REFRESH_AHEAD_SECONDS = 30.0
GOOGLE_CALLBACK_PORT = 43821
# The server's error code (and the sign-out reason) when the session's account was deleted.
ACCOUNT_DELETED = "account_deleted"
GOOGLE_CALLBACK_PATH = "/auth/callback"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> User:
        return cls(str(data["id"]), data.get("email", ""), data.get("display_name", ""), data)

    @property
    def email_verified(self) -> bool:
        return bool(self.raw.get("email_verified"))

    @property
    def has_password(self) -> bool:
        """False for an account that signs in with Google only (as far as the server said)."""
        return bool(self.raw.get("has_password", True))


@dataclass(frozen=True)
class TokenResponse:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenResponse:
        return cls(
            data["access_token"],
            data["refresh_token"],
            int(data.get("expires_in", 0)),
            User.from_json(data["user"]),
        )


@dataclass(frozen=True)
class PowerSyncToken:
    token: str
    expires_in: int


@dataclass(frozen=True)
class Rejection:
    """One entry the server refused permanently; the server's state wins for that row."""

    op_id: int | None
    id: str | None
    code: str
    message: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rejection:
        op_id = data.get("op_id")
        return cls(
            int(op_id) if op_id is not None else None,
            data.get("id"),
            str(data.get("code", "rejected")),
            str(data.get("message", "")),
        )


@dataclass(frozen=True)
class UploadResult:
    status: str  # "applied" or "rejected"; "staged" for a part of a staged upload
    applied: int
    rejections: list[Rejection]
    dropped: list[Rejection] = field(default_factory=list)
    """Late writes to rows deleted meanwhile (on another device) that an applied transaction
    left out (`row_deleted`, `parent_deleted`)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadResult:
        return cls(
            str(data.get("status", "applied")),
            int(data.get("applied", 0)),
            [Rejection.from_json(r) for r in data.get("rejections") or []],
            [Rejection.from_json(r) for r in data.get("dropped") or []],
        )


class AuthApiClient:
    """The Papyrus HTTP API, one method per endpoint.

    Network failures, 5xx and 429 raise `TransientError`; other error statuses raise `ApiError`
    with the server's `code`.
    """

    def __init__(
        self, base_url: str, *, http: httpx.Client | None = None, timeout: float = 20.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        access: str | None = None,
        json: Any = None,
        content: bytes | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {access}"} if access else {}
        extra: dict[str, Any] = {}
        if content is not None:
            headers["Content-Type"] = "application/json"
            extra["content"] = content
        if timeout is not None:
            extra["timeout"] = timeout
        try:
            resp = self.http.request(
                method, self.base_url + path, json=json, headers=headers, **extra
            )
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach the Papyrus API at {self.base_url}: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _transient_error(resp, path)
        if resp.status_code >= 400:
            raise _api_error(resp)
        return resp

    def _tokens(self, path: str, body: dict[str, Any]) -> TokenResponse:
        return TokenResponse.from_json(self._request("POST", path, json=body).json())

    def register(
        self,
        email: str,
        password: str,
        display_name: str,
        client_type: str,
        device_label: str | None = None,
    ) -> TokenResponse:
        body = {"email": email, "password": password, "display_name": display_name}
        return self._tokens("/v1/auth/register", _client(body, client_type, device_label))

    def login(
        self, email: str, password: str, client_type: str, device_label: str | None = None
    ) -> TokenResponse:
        body = {"email": email, "password": password}
        return self._tokens("/v1/auth/login", _client(body, client_type, device_label))

    def exchange_code(
        self,
        code: str,
        client_type: str,
        device_label: str | None = None,
        code_verifier: str | None = None,
    ) -> TokenResponse:
        """`code_verifier`: the PKCE verifier whose challenge started the flow, if one did."""
        body: dict[str, Any] = {"code": code}
        if code_verifier is not None:
            body["code_verifier"] = code_verifier
        return self._tokens("/v1/auth/exchange-code", _client(body, client_type, device_label))

    def refresh(self, refresh_token: str) -> TokenResponse:
        return self._tokens("/v1/auth/refresh", {"refresh_token": refresh_token})

    def logout(self, access: str, *, all_devices: bool = False) -> None:
        self._request("POST", "/v1/auth/logout", access=access, json={"all_devices": all_devices})

    def me(self, access: str) -> User:
        return User.from_json(self._request("GET", "/v1/users/me", access=access).json())

    def sessions(self, access: str) -> list[dict[str, Any]]:
        sessions: list[dict[str, Any]] = self._request(
            "GET", "/v1/auth/sessions", access=access
        ).json()
        return sessions

    def revoke_session(self, access: str, session_id: str) -> None:
        self._request("DELETE", f"/v1/auth/sessions/{session_id}", access=access)

    def powersync_token(self, access: str) -> PowerSyncToken:
        data = self._request("POST", "/v1/auth/powersync-token", access=access).json()
        return PowerSyncToken(data["token"], int(data.get("expires_in", 0)))

    def upload(self, access: str, batch: list[dict[str, Any]]) -> UploadResult:
        resp = self._request(
            "POST", "/v1/sync/powersync-upload", access=access, json={"batch": batch}
        )
        return UploadResult.from_json(resp.json())

    def upload_part(
        self, access: str, body: bytes, *, timeout: float | None = None
    ) -> UploadResult:
        """One part of a staged upload (`body` is the encoded part envelope): status `staged`,
        or, for the last part, the whole transaction's `applied`/`rejected`."""
        resp = self._request(
            "POST",
            "/v1/sync/powersync-upload/parts",
            access=access,
            content=body,
            timeout=timeout,
        )
        return UploadResult.from_json(resp.json())

    def rejections(self, access: str) -> list[dict[str, Any]]:
        data = self._request("GET", "/v1/sync/rejections", access=access).json()
        rejections: list[dict[str, Any]] = (
            data.get("rejections", data) if isinstance(data, dict) else data
        )
        return rejections

    # -- the account lifecycle (docs/account-lifecycle.md) ----------------------------------

    def verify_email(self, token: str) -> dict[str, Any]:
        """Confirms the address with a mailed link's token: `{email, email_verified}`."""
        return dict(self._request("POST", "/v1/auth/verify-email", json={"token": token}).json())

    def resend_verification(self, access: str) -> str:
        resp = self._request("POST", "/v1/auth/verify-email/resend", access=access)
        return str(resp.json()["message"])

    def forgot_password(self, email: str) -> str:
        """Asks for a reset link; the answer is the same whether or not the account exists."""
        resp = self._request("POST", "/v1/auth/password/forgot", json={"email": email})
        return str(resp.json()["message"])

    def reset_password(
        self, token: str, new_password: str, client_type: str, device_label: str | None = None
    ) -> TokenResponse:
        """Sets the password with a reset link's token; every session of the account ends and
        the returned tokens are a new one, for this device."""
        body = {"token": token, "new_password": new_password}
        return self._tokens("/v1/auth/password/reset", _client(body, client_type, device_label))

    def change_password(self, access: str, current_password: str, new_password: str) -> int:
        """Returns how many other sessions were ended (this one stays)."""
        body = {"current_password": current_password, "new_password": new_password}
        resp = self._request("POST", "/v1/auth/password/change", access=access, json=body)
        return int(resp.json()["sessions_revoked"])

    def change_email(self, access: str, new_email: str, password: str | None = None) -> str:
        body: dict[str, Any] = {"new_email": new_email}
        if password is not None:
            body["password"] = password
        resp = self._request("POST", "/v1/users/me/email", access=access, json=body)
        return str(resp.json()["message"])

    def confirm_email_change(self, token: str) -> dict[str, Any]:
        resp = self._request("POST", "/v1/auth/email/confirm-change", json={"token": token})
        return dict(resp.json())

    def delete_account(self, access: str, password: str | None = None) -> None:
        body = {} if password is None else {"password": password}
        self._request("DELETE", "/v1/users/me", access=access, json=body)

    def export_account(self, access: str, path: Path) -> int:
        """Streams the account's export into `path` (readable by its owner only, written whole
        or not at all); returns its size in bytes."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        url = self.base_url + "/v1/users/me/export"
        try:
            with self.http.stream(
                "GET", url, headers={"Authorization": f"Bearer {access}"}, timeout=300
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    if resp.status_code >= 500 or resp.status_code == 429:
                        raise _transient_error(resp, "/v1/users/me/export")
                    raise _api_error(resp)
                fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                size = 0
                with os.fdopen(fd, "wb") as out:
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
                        size += len(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise TransientError(f"cannot reach the Papyrus API at {self.base_url}: {exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        return size

    def google_start_url(self, redirect_uri: str, code_challenge: str | None = None) -> str:
        """The URL to open in the browser; `code_challenge` is an S256 PKCE challenge."""
        params = {"redirect_uri": redirect_uri}
        if code_challenge is not None:
            params |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
        return f"{self.base_url}/v1/auth/oauth/google/start?{urllib.parse.urlencode(params)}"


def new_pkce_pair() -> tuple[str, str]:
    """A fresh PKCE verifier (RFC 7636: 43-128 unreserved characters; here 86) and its S256
    challenge. The verifier never leaves this process until the code exchange."""
    verifier = secrets.token_urlsafe(64)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _client(body: dict[str, Any], client_type: str, device_label: str | None) -> dict[str, Any]:
    body = {**body, "client_type": client_type}
    if device_label:
        body["device_label"] = device_label
    return body


def _api_error(resp: httpx.Response) -> ApiError:
    try:
        err = resp.json()["error"]
        return ApiError(resp.status_code, err["code"], err["message"], err.get("details"))
    except Exception:
        return ApiError(resp.status_code, "http_error", resp.text[:200] or resp.reason_phrase)


def _transient_error(resp: httpx.Response, path: str) -> TransientError:
    """A 5xx or 429 that keeps the server's explanation and the wait it asked for."""
    api = _api_error(resp)
    text = f"the Papyrus API answered {resp.status_code} for {path}"
    if api.code != "http_error":
        text += f": {api.message}"
    retry_after = None
    hint = resp.headers.get("retry-after")
    if hint is None and isinstance(api.details, dict):
        hint = api.details.get("retry_after")
    with contextlib.suppress(TypeError, ValueError):
        retry_after = float(hint) if hint is not None else None
    return TransientError(
        text,
        status_code=resp.status_code,
        code=api.code,
        details=api.details,
        retry_after=retry_after,
    )


class _Flight:
    """One refresh in progress; everyone who asks while it runs gets its outcome."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: str | None = None
        self._error: BaseException | None = None

    def resolve(self, value: str) -> None:
        self._result = value
        self._done.set()

    def reject(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def wait(self) -> str:
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


SignOutListener = Callable[[str], None]
SignInCheck = Callable[[User], None]
"""Called with the user a sign-in authenticated, before it replaces the session; raise to refuse."""


class AuthRepository:
    """Owns the session.

    Refreshes are single-flight within the process and serialised across processes (the server
    revokes a session whose refresh token is presented twice, so concurrent refreshes would
    sign the user out): each reads the stored refresh token under the store's lock, so one that
    waited uses the token the previous refresh stored. Access tokens are refreshed shortly
    before they expire, and authorised calls retry once after a 401. A refresh the server
    refuses clears the tokens and signs the user out; a refresh that merely cannot reach the
    server keeps them.
    """

    def __init__(
        self,
        api: AuthApiClient,
        tokens: TokenStore,
        *,
        client_type: str = "cli",
        device_label: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.tokens = tokens
        self.client_type = client_type
        self.device_label = device_label
        self.user: User | None = None
        self._lock = threading.Lock()
        self._flight: _Flight | None = None
        self._listeners: list[SignOutListener] = []
        self._clock = clock
        self._refresh_at: float | None = None  # when the access token counts as stale

    # -- state -----------------------------------------------------------------------------

    def has_stored_session(self) -> bool:
        return self.tokens.load_refresh_token() is not None

    def on_signed_out(self, listener: SignOutListener) -> Callable[[], None]:
        """`listener(reason)` runs whenever the session ends ("logout", "session_expired",
        "account_deleted", or "signed_out_elsewhere" when another process of this device
        removed or replaced the stored session)."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _accept(self, tokens: TokenResponse) -> User:
        """Stores and adopts a new session (the caller holds `tokens.exclusive()`)."""
        self.tokens.save_refresh_token(tokens.refresh_token)
        self.tokens.access_token = tokens.access_token
        self.user = tokens.user
        lifetime = tokens.expires_in
        self._refresh_at = (
            self._clock() + lifetime - min(REFRESH_AHEAD_SECONDS, lifetime / 2)
            if lifetime > 0
            else None
        )
        return tokens.user

    def sign_out_locally(self, reason: str) -> None:
        try:
            with self.tokens.exclusive():
                had_session = self.tokens.access_token is not None or self.has_stored_session()
                self.tokens.clear()
        except TransientError:  # a stuck process holds the lock: sign out all the same
            had_session = True
            self.tokens.clear()
        self._ended(reason, had_session)

    def forget(self) -> None:
        """Drops the session from this process's memory only: another process of this device
        signed out or in as another account, and the stored session is its business."""
        self.tokens.access_token = None
        self.user = None
        self._refresh_at = None

    def _ended(self, reason: str, had_session: bool) -> None:
        self.forget()
        if had_session:
            for listener in list(self._listeners):
                try:
                    listener(reason)
                except Exception:
                    log.exception("a sign-out listener failed")

    # -- signing in and out ------------------------------------------------------------------

    def register(
        self, email: str, password: str, display_name: str, *, check: SignInCheck | None = None
    ) -> User:
        tokens = self.api.register(
            email, password, display_name, self.client_type, self.device_label
        )
        return self._adopt(tokens, check)

    def login(self, email: str, password: str, *, check: SignInCheck | None = None) -> User:
        tokens = self.api.login(email, password, self.client_type, self.device_label)
        return self._adopt(tokens, check)

    def exchange_code(
        self, code: str, code_verifier: str | None = None, *, check: SignInCheck | None = None
    ) -> User:
        tokens = self.api.exchange_code(code, self.client_type, self.device_label, code_verifier)
        return self._adopt(tokens, check)

    def reset_password(
        self, token: str, new_password: str, *, check: SignInCheck | None = None
    ) -> User:
        """Sets the password with a reset link's token and signs this device in (the reset
        ended every other session of the account)."""
        tokens = self.api.reset_password(token, new_password, self.client_type, self.device_label)
        return self._adopt(tokens, check)

    def sign_in_with_google(
        self,
        open_browser: Callable[[str], Any] = webbrowser.open,
        *,
        port: int = GOOGLE_CALLBACK_PORT,
        timeout: float = 300.0,
        check: SignInCheck | None = None,
    ) -> User:
        """Opens the browser at the API's Google start URL, waits for the one-time code on a
        one-shot loopback listener, and exchanges it. `open_browser` is injectable for tests.

        The start carries a PKCE challenge and the exchange its verifier, so a code that some
        other local process catches (or plants on the listener) is useless to it and to us."""
        verifier, challenge = new_pkce_pair()
        with LoopbackReceiver(port) as receiver:
            open_browser(self.api.google_start_url(receiver.redirect_uri, challenge))
            code = receiver.wait(timeout)
        return self.exchange_code(code, verifier, check=check)

    def _adopt(self, tokens: TokenResponse, check: SignInCheck | None) -> User:
        """Makes a successful sign-in the session. Until here the previous session is untouched,
        so a failed sign-in (wrong password, unreachable server) never ends it.

        `check(user)` may still refuse the new user (by raising): that sign-in's session is then
        ended on the server and the previous one stays. A replaced session is ended on the
        server, best effort."""
        if check is not None:
            try:
                check(tokens.user)
            except BaseException:
                self._end_server_session(tokens.access_token, None)
                raise
        with self.tokens.exclusive():
            previous = (self.tokens.access_token, self.tokens.load_refresh_token())
            user = self._accept(tokens)
        if previous != (None, None):
            self._end_server_session(*previous)
        return user

    def _end_server_session(self, access: str | None, refresh_token: str | None) -> None:
        """Ends a session on the server without touching the stored one, best effort: the
        sign-in that replaced or refused it has succeeded either way."""
        try:
            if access is None and refresh_token is not None:
                access = self.api.refresh(refresh_token).access_token
            if access is not None:
                self.api.logout(access)
        except ApiError:
            pass  # refused: that session was already revoked or expired
        except Exception as exc:
            log.info("could not end a replaced session on the server: %s", exc)

    def logout(self, *, all_devices: bool = False) -> str | None:
        """Ends the session on the server (best effort) and forgets it locally either way.

        Returns None when the server ended the session (or it had already ended), otherwise
        why it could not be ended: it then stays valid on the server until it expires."""
        problem: str | None = None
        access = self.tokens.access_token
        if access is None and self.has_stored_session():
            try:
                access = self.refresh()
            except SignedOutError:
                pass  # the server refused the refresh: that session is over already
            except Exception as exc:
                problem = str(exc)
        if access is not None:
            try:
                self.api.logout(access, all_devices=all_devices)
            except ApiError as exc:
                if not exc.is_unauthorized:
                    problem = str(exc)
            except Exception as exc:  # an unreachable server must not keep the user signed in
                log.info("server logout failed (%s); signing out locally", exc)
                problem = str(exc)
        self.sign_out_locally("logout")
        return problem

    # -- tokens ----------------------------------------------------------------------------

    def refresh(self, stale: str | None = None) -> str:
        """A new access token. Concurrent callers share one request; a caller whose `stale`
        token was already replaced gets the new one without another request."""
        with self._lock:
            current = self.tokens.access_token
            if stale is not None and current is not None and current != stale:
                return current
            flight = self._flight
            leader = flight is None
            if flight is None:
                flight = self._flight = _Flight()
        if leader:
            try:
                flight.resolve(self._do_refresh())
            except BaseException as exc:
                flight.reject(exc)
            finally:
                with self._lock:
                    self._flight = None
        return flight.wait()

    def _do_refresh(self) -> str:
        """Read the stored refresh token, rotate it, store the new one: all under the store's
        lock, so a refresh that waited for another process's uses the token that one stored."""
        refused: ApiError | None = None
        tokens: TokenResponse | None = None
        with self.tokens.exclusive():
            stored = self.tokens.load_refresh_token()
            if stored is not None:
                try:
                    tokens = self.api.refresh(stored)
                except ApiError as exc:
                    refused = exc
                    self.tokens.clear()  # the refused token is still the stored one
                else:
                    if self.user is None or tokens.user.id == self.user.id:
                        self._accept(tokens)
                    else:
                        self.tokens.save_refresh_token(tokens.refresh_token)
        if refused is not None:
            if refused.code == ACCOUNT_DELETED:
                self._ended(ACCOUNT_DELETED, had_session=True)
                raise AccountDeletedError(
                    f"the account has been deleted: {refused.message}"
                ) from refused
            self._ended("session_expired", had_session=True)
            raise SignedOutError(f"the session has ended: {refused.message}") from refused
        if tokens is None or self.user is None or tokens.user.id != self.user.id:
            # Another process of this device signed out, or in as another account (whose
            # rotated token was stored above, so that session lives on): not this one's.
            had_session = self.user is not None or self.tokens.access_token is not None
            self._ended("signed_out_elsewhere", had_session)
            raise SignedOutError("not signed in")
        return tokens.access_token

    def access_token(self) -> str:
        token = self.tokens.access_token
        if token is None:
            return self.refresh()
        if self._refresh_at is not None and self._clock() >= self._refresh_at:
            try:
                return self.refresh(stale=token)
            except TransientError:
                return token  # not expired yet; a 401 later refreshes again
        return token

    def authorized(self, call: Callable[[str], T]) -> T:
        """Runs `call(access_token)`; after a 401 refreshes once and runs it again."""
        token = self.access_token()
        try:
            return call(token)
        except ApiError as exc:
            if not exc.is_unauthorized:
                raise
            if exc.code == ACCOUNT_DELETED:  # definite: a refresh cannot help
                self.sign_out_locally(ACCOUNT_DELETED)
                raise AccountDeletedError(f"the account has been deleted: {exc.message}") from exc
        return call(self.refresh(stale=token))

    def me(self) -> User:
        user = self.authorized(self.api.me)
        self.user = user
        return user

    def create_powersync_token(self) -> PowerSyncToken:
        return self.authorized(self.api.powersync_token)

    def upload_powersync_batch(self, batch: list[dict[str, Any]]) -> UploadResult:
        return self.authorized(lambda access: self.api.upload(access, batch))

    def upload_powersync_part(self, body: bytes, *, timeout: float | None = None) -> UploadResult:
        return self.authorized(lambda access: self.api.upload_part(access, body, timeout=timeout))

    def server_rejections(self) -> list[dict[str, Any]]:
        return self.authorized(self.api.rejections)

    def resend_verification(self) -> str:
        return self.authorized(self.api.resend_verification)

    def change_password(self, current_password: str, new_password: str) -> int:
        return self.authorized(
            lambda access: self.api.change_password(access, current_password, new_password)
        )

    def change_email(self, new_email: str, password: str | None = None) -> str:
        return self.authorized(lambda access: self.api.change_email(access, new_email, password))

    def delete_account(self, password: str | None = None) -> None:
        self.authorized(lambda access: self.api.delete_account(access, password))

    def export_account(self, path: Path) -> int:
        return self.authorized(lambda access: self.api.export_account(access, path))


class _CallbackHandler(http.server.BaseHTTPRequestHandler):
    server: _CallbackServer

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != GOOGLE_CALLBACK_PATH:
            self.send_error(404)
            return
        query = urllib.parse.parse_qs(url.query)
        code, error = query.get("code", [None])[0], query.get("error", [None])[0]
        ok = bool(code) and not error
        body = (
            "Signed in to Papyrus. You can close this window."
            if ok
            else f"Sign-in failed: {error or 'no code'}. You can close this window."
        ).encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.outcome = (code, error or (None if code else "missing_code"))

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("loopback: " + format, *args)


class _CallbackServer(http.server.HTTPServer):
    outcome: tuple[str | None, str | None] | None = None


class LoopbackReceiver:
    """A one-shot HTTP listener on 127.0.0.1 that receives the OAuth redirect."""

    def __init__(self, port: int = GOOGLE_CALLBACK_PORT) -> None:
        try:
            self._server = _CallbackServer(("127.0.0.1", port), _CallbackHandler)
        except OSError as exc:
            raise SignInError(f"cannot listen on 127.0.0.1:{port} for the sign-in: {exc}") from exc
        self.port = self._server.server_address[1]
        self.redirect_uri = f"http://localhost:{self.port}{GOOGLE_CALLBACK_PATH}"

    def wait(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self._server.outcome is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SignInError("timed out waiting for the browser sign-in")
            self._server.timeout = min(remaining, 0.5)
            self._server.handle_request()
        code, error = self._server.outcome
        if error or not code:
            raise SignInError(f"the sign-in was not completed: {error}")
        return code

    def close(self) -> None:
        self._server.server_close()

    def __enter__(self) -> LoopbackReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
