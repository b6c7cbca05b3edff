"""The OpenID provider behind "Sign in with Google", spoken to through Authlib.

Google is just the default issuer: discovery, token exchange and ID-token checks are plain
OpenID Connect, so any compliant provider can stand in (tests run one on loopback).
Discovery and JWKS are cached per process; a token signed with an unknown `kid` refetches the
JWKS once, which is how provider key rotation is picked up without a restart.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import is_secure_transport
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from papyrus.server.config import Settings
from papyrus.server.text import storable_or_none

# Authlib 1.9 announces that it will want the httpx2 fork; it works with httpx, which the rest
# of Papyrus uses (constraints.txt pins the tested version). Keep the notice out of server logs.
warnings.filterwarnings("ignore", "The httpx module is deprecated", AuthlibDeprecationWarning)
from authlib.integrations.base_client.errors import OAuthError  # noqa: E402
from authlib.integrations.httpx_client import AsyncOAuth2Client  # noqa: E402

log = logging.getLogger(__name__)

SCOPES = "openid email profile"
GOOGLE = "google"
GOOGLE_ISSUER = "https://accounts.google.com"
CACHE_SECONDS = 3600
HTTP_TIMEOUT_SECONDS = 10.0
# Clock skew tolerated on `exp`/`iat`.
LEEWAY_SECONDS = 60
# Only asymmetric algorithms: an HMAC-signed ID token would be keyed by our own client secret.
_ALLOWED_ALGS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}


class ProviderError(Exception):
    """A provider step failed; `code` is the short reason sent to the app, never a secret."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class VerifiedIdentity:
    """Claims from an ID token whose signature, issuer, audience, expiry and nonce all held."""

    subject: str
    email: str | None
    email_verified: bool
    name: str | None
    picture: str | None


class OidcProvider:
    def __init__(
        self,
        *,
        name: str,
        issuer: str,
        client_id: str,
        client_secret: str,
        callback_url: str,
        timeout: float = HTTP_TIMEOUT_SECONDS,
    ) -> None:
        self.name = name
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self.callback_url = callback_url
        self._timeout = timeout
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._jwks: KeySet | None = None
        self._jwks_at = 0.0

    def __repr__(self) -> str:  # keeps the client secret out of logs and tracebacks
        return f"OidcProvider(name={self.name!r}, issuer={self.issuer!r})"

    @property
    def accepted_issuers(self) -> list[str]:
        # Google documents both spellings for `iss` in its ID tokens.
        if self.issuer == GOOGLE_ISSUER:
            return [GOOGLE_ISSUER, "accounts.google.com"]
        return [self.issuer]

    async def metadata(self) -> dict[str, Any]:
        """The discovery document, checked to belong to the configured issuer."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < CACHE_SECONDS:
            return self._metadata
        if not is_secure_transport(self.issuer):  # plain http only on loopback
            raise ProviderError("provider_unavailable", "issuer must use https")
        url = f"{self.issuer}/.well-known/openid-configuration"
        document = await self._get_json(url, "discovery")
        if document.get("issuer", "").rstrip("/") != self.issuer:
            raise ProviderError("provider_unavailable", "discovery issuer does not match")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(key)
            if not isinstance(value, str) or not is_secure_transport(value):
                raise ProviderError("provider_unavailable", f"discovery {key} missing or insecure")
        self._metadata, self._metadata_at = document, time.monotonic()
        return document

    async def authorization_url(self, *, state: str, nonce: str, code_verifier: str) -> str:
        """Where to send the browser: code flow with PKCE (S256) and an OIDC nonce."""
        metadata = await self.metadata()
        url: str
        async with self._oauth_client(metadata) as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=state,
                nonce=nonce,
                code_verifier=code_verifier,
            )
        return url

    async def fetch_identity(
        self, *, code: str, code_verifier: str, nonce: str
    ) -> VerifiedIdentity:
        """Redeems the provider's authorization code and verifies the ID token it returns."""
        metadata = await self.metadata()
        try:
            async with self._oauth_client(metadata) as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=code_verifier
                )
        except OAuthError as exc:
            raise ProviderError("token_exchange_failed", f"token endpoint: {exc.error}") from None
        except Exception as exc:  # transport errors come from httpx or, later, httpx2
            raise ProviderError(
                "provider_unavailable", f"token endpoint: {type(exc).__name__}"
            ) from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderError("invalid_id_token", "token response has no id_token")
        return await self.verify_id_token(
            id_token, nonce=nonce, access_token=token.get("access_token")
        )

    async def verify_id_token(
        self, id_token: str, *, nonce: str, access_token: str | None = None
    ) -> VerifiedIdentity:
        """Signature (provider JWKS), then `iss`, `aud`, `azp`, `exp`, `iat`, `nonce`, `at_hash`."""
        metadata = await self.metadata()
        algs = set(metadata.get("id_token_signing_alg_values_supported") or ["RS256"])
        registry = JWSRegistry(algorithms=sorted(algs & _ALLOWED_ALGS) or ["RS256"])
        try:
            try:
                decoded = jwt.decode(id_token, await self._key_set(), registry=registry)
            except InvalidKeyIdError:  # signed with a key we have not seen: rotation
                decoded = jwt.decode(id_token, await self._key_set(refresh=True), registry=registry)
            params: dict[str, Any] = {"nonce": nonce, "client_id": self.client_id}
            if access_token:
                params["access_token"] = access_token
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "values": self.accepted_issuers},
                    "aud": {"essential": True, "value": self.client_id},
                    "sub": {"essential": True},
                    "nonce": {"essential": True, "value": nonce},
                },
                params,
            )
            claims.validate(leeway=LEEWAY_SECONDS)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderError("invalid_id_token", f"id token: {type(exc).__name__}") from None
        # Stored as text: a value PostgreSQL cannot hold is treated as absent, and a subject
        # that cannot be stored cannot be linked at all.
        email, name, picture = (
            storable_or_none(value) if isinstance(value, str) else None
            for value in (claims.get("email"), claims.get("name"), claims.get("picture"))
        )
        subject = storable_or_none(str(claims["sub"]))
        if not subject or len(subject) > 255:
            raise ProviderError("invalid_id_token", "id token: unusable sub")
        return VerifiedIdentity(
            subject=subject,
            email=email,
            email_verified=_is_true(claims.get("email_verified")),
            name=name,
            picture=picture,
        )

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        fresh = time.monotonic() - self._jwks_at < CACHE_SECONDS
        if self._jwks is not None and fresh and not refresh:
            return self._jwks
        metadata = await self.metadata()
        document = await self._get_json(metadata["jwks_uri"], "jwks")
        try:
            # Untrusted JSON, not yet the typed shape joserfc declares: it checks and raises.
            key_set = KeySet.import_key_set(document)  # type: ignore[arg-type]  # joserfc checks it
        except (JoseError, ValueError, KeyError, TypeError) as exc:
            raise ProviderError("provider_unavailable", f"jwks: {type(exc).__name__}") from None
        self._jwks, self._jwks_at = key_set, time.monotonic()
        return key_set

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                response = await http.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError("provider_unavailable", f"{what}: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise ProviderError("provider_unavailable", f"{what}: not a JSON object")
        return document

    def _oauth_client(self, metadata: dict[str, Any]) -> AsyncOAuth2Client:
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        auth_method = (
            "client_secret_post"
            if "client_secret_basic" not in methods and "client_secret_post" in methods
            else "client_secret_basic"
        )
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            scope=SCOPES,
            redirect_uri=self.callback_url,
            code_challenge_method="S256",
            token_endpoint_auth_method=auth_method,
            timeout=self._timeout,
        )


def _is_true(value: object) -> bool:
    # Some providers send the string "true".
    return value is True or (isinstance(value, str) and value.lower() == "true")


def google_configured(settings: Settings) -> bool:
    secret = settings.GOOGLE_OAUTH_CLIENT_SECRET
    return bool(settings.GOOGLE_OAUTH_CLIENT_ID and secret and secret.get_secret_value())


def google_callback_url(settings: Settings) -> str:
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}/v1/auth/oauth/google/callback"


def google_provider(app_state: Any, settings: Settings) -> OidcProvider | None:
    """The app's Google provider (one per app, so its caches live as long as the process)."""
    if not google_configured(settings):
        return None
    provider = getattr(app_state, "oauth_google", None)
    if provider is None:
        assert settings.GOOGLE_OAUTH_CLIENT_ID and settings.GOOGLE_OAUTH_CLIENT_SECRET
        provider = OidcProvider(
            name=GOOGLE,
            issuer=settings.GOOGLE_OAUTH_ISSUER,
            client_id=settings.GOOGLE_OAUTH_CLIENT_ID,
            client_secret=settings.GOOGLE_OAUTH_CLIENT_SECRET.get_secret_value(),
            callback_url=google_callback_url(settings),
        )
        app_state.oauth_google = provider
    return provider
