"""The RSA keys that sign PowerSync tokens: loaded from settings, generated in development, rotated.

The current key signs. The previous key (the one current before the last rotation) never signs;
it is only published in the JWKS, so tokens it signed keep verifying until they expire. A kid
defaults to the key's RFC 7638 thumbprint, so a rotation changes it without touching settings.

Without key settings (development, tests) keys live under `<DATA_DIR>/keys/`:
`powersync-current.pem` (private, 0600) and, after a rotation, `powersync-previous.pem` (public).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from papyrus.server.config import Settings
from papyrus.server.powersync.schemas import Jwks

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
MIN_KEY_BITS = 2048
KEY_DIR = "keys"
CURRENT_FILE = "powersync-current.pem"
PREVIOUS_FILE = "powersync-previous.pem"


class KeyConfigError(Exception):
    """A key setting or file is unusable; the message says which and what to do."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    public_key: rsa.RSAPublicKey

    def jwk(self) -> dict[str, str]:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
            "n": _b64_uint(numbers.n),
            "e": _b64_uint(numbers.e),
        }


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @property
    def verification_key(self) -> VerificationKey:
        return VerificationKey(self.kid, self.private_key.public_key())


@dataclass(frozen=True)
class KeySet:
    current: SigningKey
    previous: VerificationKey | None = None

    def verification_keys(self) -> list[VerificationKey]:
        keys = [self.current.verification_key]
        if self.previous is not None and self.previous.kid != self.current.kid:
            keys.append(self.previous)
        return keys

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return self._jwks

    @cached_property
    def _jwks(self) -> dict[str, list[dict[str, str]]]:
        # Checked against the response model once, not per request.
        return Jwks.model_validate(
            {"keys": [key.jwk() for key in self.verification_keys()]}
        ).model_dump()


@dataclass(frozen=True)
class Rotation:
    new_kid: str
    previous_kid: str | None  # None: there was no key yet, this created the first one
    current_path: Path
    previous_path: Path


def thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a stable kid derived from the key itself."""
    numbers = public_key.public_numbers()
    canonical = json.dumps(
        {"e": _b64_uint(numbers.e), "kty": "RSA", "n": _b64_uint(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


def load_keyset(settings: Settings) -> KeySet:
    """The signing key and the previous verification key, as the settings describe them."""
    private_key = _load_current(settings)
    current = SigningKey(
        settings.POWERSYNC_JWT_KEY_ID or thumbprint(private_key.public_key()), private_key
    )
    previous_key = _load_previous(settings)
    previous = None
    if previous_key is not None:
        kid = settings.POWERSYNC_JWT_PREVIOUS_KEY_ID or thumbprint(previous_key)
        if kid == current.kid and _pem(previous_key) != _pem(private_key.public_key()):
            raise KeyConfigError("the previous and the current PowerSync key have the same kid")
        previous = VerificationKey(kid, previous_key)
    return KeySet(current, previous)


def rotate(settings: Settings, *, force: bool = False, now: float | None = None) -> Rotation:
    """Current key becomes previous, a new key becomes current; with no key yet, creates one.

    Refused (unless `force`) while the current key is younger than a token lifetime: the previous
    key would be dropped while tokens it signed may still be in use.
    """
    current_path, previous_path = _rotation_paths(settings)
    if not current_path.exists():
        created = _load_or_create_private(current_path)
        return Rotation(thumbprint(created.public_key()), None, current_path, previous_path)
    old_key = _read_private(current_path, str(current_path))
    age = (now or time.time()) - current_path.stat().st_mtime
    if not force and previous_path.exists() and age < settings.POWERSYNC_TOKEN_TTL_SECONDS:
        raise KeyConfigError(
            f"the current key became current {int(age)}s ago; tokens signed by the previous key "
            f"may be valid for up to {settings.POWERSYNC_TOKEN_TTL_SECONDS}s. Rotate again after "
            "that (or pass --force to drop the previous key now)."
        )
    old_public = old_key.public_key()
    _atomic_write(previous_path, _pem(old_public), 0o644)
    new_key = _generate()
    _atomic_write(current_path, _private_pem(new_key), 0o600)
    return Rotation(
        new_kid=thumbprint(new_key.public_key()),
        previous_kid=thumbprint(old_public),
        current_path=current_path,
        previous_path=previous_path,
    )


def key_dir(settings: Settings) -> Path:
    return Path(settings.DATA_DIR) / KEY_DIR


def _load_current(settings: Settings) -> rsa.RSAPrivateKey:
    if settings.POWERSYNC_JWT_PRIVATE_KEY:
        pem = settings.POWERSYNC_JWT_PRIVATE_KEY.get_secret_value().encode()
        return _parse_private(pem, "POWERSYNC_JWT_PRIVATE_KEY")
    if settings.POWERSYNC_JWT_PRIVATE_KEY_FILE:
        path = Path(settings.POWERSYNC_JWT_PRIVATE_KEY_FILE)
        return _read_private(path, f"POWERSYNC_JWT_PRIVATE_KEY_FILE ({path})")
    if settings.is_production:  # Settings refuses this already; never generate keys in production
        raise KeyConfigError("POWERSYNC_JWT_PRIVATE_KEY_FILE is required in production")
    return _load_or_create_private(key_dir(settings) / CURRENT_FILE)


def _load_previous(settings: Settings) -> rsa.RSAPublicKey | None:
    if settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY:
        return _parse_public(
            settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY.encode(), "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY"
        )
    if settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE:
        path = Path(settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE)
        if not path.exists():  # normal until the first rotation
            log.info("powersync: no previous key yet (%s does not exist)", path)
            return None
        return _parse_public(
            _read(path, str(path)), f"POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE ({path})"
        )
    if settings.POWERSYNC_JWT_PRIVATE_KEY or settings.POWERSYNC_JWT_PRIVATE_KEY_FILE:
        return None
    path = key_dir(settings) / PREVIOUS_FILE
    return _parse_public(_read(path, str(path)), str(path)) if path.exists() else None


def _rotation_paths(settings: Settings) -> tuple[Path, Path]:
    if settings.POWERSYNC_JWT_PRIVATE_KEY:
        raise KeyConfigError(
            "POWERSYNC_JWT_PRIVATE_KEY is given inline, so it cannot be rotated in place: use "
            "POWERSYNC_JWT_PRIVATE_KEY_FILE and POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE instead"
        )
    if settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY:
        raise KeyConfigError(
            "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY is given inline; use "
            "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE so a rotation can write it"
        )
    if settings.POWERSYNC_JWT_PRIVATE_KEY_FILE:
        if not settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE:
            raise KeyConfigError(
                "set POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE: the rotated-out public key is written "
                "there, and the server must keep publishing it until its tokens expire"
            )
        return (
            Path(settings.POWERSYNC_JWT_PRIVATE_KEY_FILE),
            Path(settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE),
        )
    if settings.POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE:
        raise KeyConfigError(
            "POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE needs POWERSYNC_JWT_PRIVATE_KEY_FILE"
        )
    return key_dir(settings) / CURRENT_FILE, key_dir(settings) / PREVIOUS_FILE


def _load_or_create_private(path: Path) -> rsa.RSAPrivateKey:
    """Creates the key once; concurrent workers racing here all end up with the same file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = _write_temp(path, _private_pem(_generate()), 0o600)
        try:
            os.link(tmp, path)  # atomic create-if-absent, with the full content
            log.info("powersync: generated a signing key in %s", path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return _read_private(path, str(path))


def _generate() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=MIN_KEY_BITS)


def _read(path: Path, source: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"cannot read {source}: {exc.strerror}") from None


def _read_private(path: Path, source: str) -> rsa.RSAPrivateKey:
    return _parse_private(_read(path, source), source)


def _parse_private(pem: bytes, source: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise KeyConfigError(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_KEY_BITS:
        raise KeyConfigError(f"{source} must be an RSA key of at least {MIN_KEY_BITS} bits")
    return key


def _parse_public(pem: bytes, source: str) -> rsa.RSAPublicKey:
    """A public key PEM; a private key PEM is accepted too (its public half is used)."""
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        key = _parse_private(pem, source).public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < MIN_KEY_BITS:
        raise KeyConfigError(f"{source} must be an RSA key of at least {MIN_KEY_BITS} bits")
    return key


def _pem(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_temp(path: Path, content: bytes, mode: int) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    return Path(name)


def _atomic_write(path: Path, content: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.replace(_write_temp(path, content, mode), path)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64_uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))
