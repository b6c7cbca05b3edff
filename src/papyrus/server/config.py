"""Server settings, read from the environment and an optional `.env` file.

Production (`PAPYRUS_ENV=production`) fails closed: every secret must be given. In development,
missing secrets are generated once and kept under the data directory, never in the repository.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    PAPYRUS_ENV: Literal["development", "production", "test"] = "development"
    DATA_DIR: Path = Path(".local")
    DATABASE_URL: str | None = None
    PUBLIC_BASE_URL: str = "http://localhost:8080"
    LOG_LEVEL: str = "INFO"

    ACCESS_TOKEN_SECRET: SecretStr | None = None
    ACCESS_TOKEN_TTL_SECONDS: int = Field(default=900, ge=30, le=86400)
    REFRESH_TOKEN_TTL_DAYS: int = Field(default=30, ge=1, le=365)

    RATE_LIMIT_AUTH_IP_PER_MINUTE: int = Field(default=60, ge=1)
    # Failed logins for one email from one source (IPv4 address or IPv6 /64) in the window.
    RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE: int = Field(default=10, ge=1)
    # Failed logins for one email from every source: past it, only known sources may try.
    RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL: int = Field(default=100, ge=1)
    RATE_LIMIT_LOGIN_FAILURE_WINDOW_SECONDS: int = Field(default=900, ge=1)
    # How long a source that signed in to an account stays known to it.
    RATE_LIMIT_LOGIN_KNOWN_SOURCE_DAYS: int = Field(default=90, ge=1)

    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs, comma-
    # separated; "*" for any). Empty: none, the TCP peer is the client.
    FORWARDED_ALLOW_IPS: Annotated[list[str], NoDecode] = []
    # A request body must arrive in full within this time, or the answer is 408.
    REQUEST_BODY_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0, le=600)

    @field_validator("FORWARDED_ALLOW_IPS", mode="before")
    @classmethod
    def _split_forwarded(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("FORWARDED_ALLOW_IPS")
    @classmethod
    def _check_forwarded(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*":
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"not an IP address or network: {item!r}") from None
        return value

    # --- OAuth: Google sign-in (see docs/google-sign-in.md) ---
    GOOGLE_OAUTH_CLIENT_ID: str | None = None
    GOOGLE_OAUTH_CLIENT_SECRET: SecretStr | None = None
    # Any OpenID provider can stand in for Google; discovery is read from <issuer>/.well-known/...
    GOOGLE_OAUTH_ISSUER: str = "https://accounts.google.com"
    # Exact app callback URIs Papyrus may send a one-time code to (comma-separated in env).
    OAUTH_APP_REDIRECT_URIS: Annotated[list[str], NoDecode] = [
        "papyrus://auth/callback",
        "http://localhost:43821/auth/callback",
        "http://127.0.0.1:43821/auth/callback",
    ]
    # Web app origins; each adds `<origin>/auth/callback` to the allowlist (comma-separated).
    OAUTH_WEB_ORIGINS: Annotated[list[str], NoDecode] = []
    # Refuse a start whose redirect_uri is not http(s) (a custom scheme such as papyrus://, which
    # another app can register too) unless the app sends a PKCE code_challenge.
    OAUTH_REQUIRE_APP_PKCE_FOR_CUSTOM_SCHEMES: bool = True

    @field_validator("OAUTH_APP_REDIRECT_URIS", "OAUTH_WEB_ORIGINS", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("OAUTH_APP_REDIRECT_URIS")
    @classmethod
    def _check_app_redirect_uris(cls, value: list[str]) -> list[str]:
        for uri in value:
            parts = urlsplit(uri)
            absolute = parts.scheme and (parts.netloc or parts.path)
            if not absolute or parts.query or parts.fragment:
                raise ValueError(f"not an absolute URI without query or fragment: {uri!r}")
        return value

    @field_validator("OAUTH_WEB_ORIGINS")
    @classmethod
    def _check_web_origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            parts = urlsplit(origin.rstrip("/"))
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ValueError(f"not an origin like https://app.example.com: {origin!r}")
            origins.append(f"{parts.scheme}://{parts.netloc}")
        return origins

    # --- end OAuth ---

    # --- Mail: outgoing SMTP and the account links it carries (see docs/account-lifecycle.md) ---
    # Unset: nothing is sent; messages wait in the outbox (`papyrus mail outbox`) until it is set.
    # `papyrus dev` points it at its local mail catcher.
    SMTP_HOST: str | None = None
    SMTP_PORT: int = Field(default=587, ge=1, le=65535)
    # "starttls" (submission, port 587), "tls" (implicit TLS, port 465), "none" (loopback only).
    SMTP_SECURITY: Literal["starttls", "tls", "none"] = "starttls"
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: SecretStr | None = None
    # A PEM bundle of certificate authorities to trust instead of the system's (a private relay).
    SMTP_TLS_CA_FILE: Path | None = None
    SMTP_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0, le=600)
    MAIL_FROM: str = "Papyrus <no-reply@localhost>"
    # Links in mail point here instead of PUBLIC_BASE_URL (an app's web origin or universal-link
    # domain, so mobile apps can open them); the paths are /account/verify-email and so on.
    APP_LINK_BASE_URL: str | None = None
    # Delivery attempts before a message is marked failed; the wait doubles after each attempt,
    # from MAIL_RETRY_BASE_SECONDS up to an hour.
    MAIL_MAX_ATTEMPTS: int = Field(default=8, ge=1, le=100)
    MAIL_RETRY_BASE_SECONDS: float = Field(default=30.0, gt=0, le=3600)
    # How often each server process looks for mail queued by another process.
    MAIL_POLL_SECONDS: float = Field(default=5.0, gt=0, le=3600)
    # Mails with a link (verification, reset, address change) per recipient address per hour.
    RATE_LIMIT_MAIL_PER_ADDRESS_PER_HOUR: int = Field(default=5, ge=1)
    # A Google sign-in this recent (on the same session) confirms deleting the account or
    # changing its address, like the password does.
    RECENT_AUTH_SECONDS: int = Field(default=300, ge=30, le=86400)

    @field_validator(
        "SMTP_HOST",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "APP_LINK_BASE_URL",
        "SMTP_TLS_CA_FILE",
        mode="before",
    )
    @classmethod
    def _blank_mail_setting_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("APP_LINK_BASE_URL")
    @classmethod
    def _check_link_base(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                raise ValueError(f"not a base URL like https://read.example.com: {value!r}")
        return value

    @model_validator(mode="after")
    def _check_mail(self) -> Settings:
        if bool(self.SMTP_USERNAME) != bool(self.SMTP_PASSWORD):
            raise ValueError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
        loopback = self.SMTP_HOST in (None, "localhost") or _is_loopback(self.SMTP_HOST or "")
        if (
            self.SMTP_SECURITY == "none"
            and not loopback
            and (self.is_production or self.SMTP_PASSWORD)
        ):
            raise ValueError(
                "SMTP_SECURITY=none sends mail (and any SMTP password) in clear text: use "
                "starttls or tls for a relay that is not on this machine"
            )
        return self

    def link_base_url(self) -> str:
        return (self.APP_LINK_BASE_URL or self.PUBLIC_BASE_URL).rstrip("/")

    # --- end Mail ---

    # --- PowerSync: token signing keys and replication (see docs/deployment.md) ---
    POWERSYNC_JWT_AUDIENCE: str = Field(default="powersync", min_length=1)
    # The PowerSync service refuses tokens that live longer than a day.
    POWERSYNC_TOKEN_TTL_SECONDS: int = Field(default=300, ge=30, le=86400)
    # The current RSA signing key, as inline PEM or a PEM file. Unset outside production: a key is
    # generated once under DATA_DIR/keys. The kid defaults to the key's RFC 7638 thumbprint.
    POWERSYNC_JWT_PRIVATE_KEY: SecretStr | None = None
    POWERSYNC_JWT_PRIVATE_KEY_FILE: Path | None = None
    POWERSYNC_JWT_KEY_ID: str | None = None
    # The key before the last rotation: only published in the JWKS, so tokens it signed verify
    # until they expire.
    POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY: str | None = None
    POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE: Path | None = None
    POWERSYNC_JWT_PREVIOUS_KEY_ID: str | None = None
    # The login role the PowerSync service replicates with (`papyrus db setup-replication`).
    POWERSYNC_REPLICATION_ROLE: str = Field(
        default="powersync_replication", pattern=r"^[a-z_][a-z0-9_]{0,62}$"
    )
    POWERSYNC_REPLICATION_PASSWORD: SecretStr | None = None

    @field_validator(
        "POWERSYNC_JWT_PRIVATE_KEY",
        "POWERSYNC_JWT_PRIVATE_KEY_FILE",
        "POWERSYNC_JWT_KEY_ID",
        "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY",
        "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE",
        "POWERSYNC_JWT_PREVIOUS_KEY_ID",
        "POWERSYNC_REPLICATION_PASSWORD",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `NAME=` copied from .env.example means unset, not the path "." or an empty key.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_powersync_keys(self) -> Settings:
        pairs = [
            ("POWERSYNC_JWT_PRIVATE_KEY", "POWERSYNC_JWT_PRIVATE_KEY_FILE"),
            ("POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY", "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE"),
        ]
        for inline, file in pairs:
            if getattr(self, inline) and getattr(self, file):
                raise ValueError(f"set either {inline} or {file}, not both")
        if self.is_production and not (
            self.POWERSYNC_JWT_PRIVATE_KEY or self.POWERSYNC_JWT_PRIVATE_KEY_FILE
        ):
            # Named together with any other missing setting, so one start shows everything.
            missing = [name for name in self.required_in_production() if not getattr(self, name)]
            raise ValueError(
                "production start refused, missing settings: "
                + ", ".join([*missing, "POWERSYNC_JWT_PRIVATE_KEY_FILE"])
                + " (or POWERSYNC_JWT_PRIVATE_KEY: the RSA key that signs PowerSync tokens; "
                "`papyrus keys rotate` creates the file if it does not exist) (see .env.example)"
            )
        return self

    @cached_property
    def powersync_replication_password(self) -> str:
        if self.POWERSYNC_REPLICATION_PASSWORD:
            return self.POWERSYNC_REPLICATION_PASSWORD.get_secret_value()
        if self.is_production:
            raise RuntimeError("POWERSYNC_REPLICATION_PASSWORD is required in production")
        return dev_secret(self.DATA_DIR, "powersync-replication-password")

    # --- end PowerSync ---

    @field_validator("DATABASE_URL")
    @classmethod
    def _use_psycopg_driver(cls, value: str | None) -> str | None:
        if not value:
            return None
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @model_validator(mode="after")
    def _enforce_production_secrets(self) -> Settings:
        if self.PAPYRUS_ENV != "production":
            return self
        missing = [name for name in self.required_in_production() if not getattr(self, name)]
        if missing:
            raise ValueError(
                "production start refused, missing settings: "
                + ", ".join(missing)
                + " (see .env.example)"
            )
        return self

    @staticmethod
    def required_in_production() -> list[str]:
        return ["DATABASE_URL", "ACCESS_TOKEN_SECRET"]

    @property
    def is_production(self) -> bool:
        return self.PAPYRUS_ENV == "production"

    @cached_property
    def access_token_secret(self) -> str:
        if self.ACCESS_TOKEN_SECRET:
            return self.ACCESS_TOKEN_SECRET.get_secret_value()
        return dev_secret(self.DATA_DIR, "access-token-secret")

    def database_url(self) -> str:
        if not self.DATABASE_URL:
            raise RuntimeError("DATABASE_URL is not resolved; start the embedded database first")
        return self.DATABASE_URL


def dev_secret(data_dir: Path, name: str, nbytes: int = 32) -> str:
    """A development secret generated on first use and kept (0600) under the data dir."""
    path = Path(data_dir) / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker won the race
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(nbytes))
    return path.read_text().strip()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
