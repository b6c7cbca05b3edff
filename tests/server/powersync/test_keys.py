"""Signing keys: development generation, settings, production refusal, and rotation."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from joserfc.errors import JoseError
from pydantic import ValidationError
from typer.testing import CliRunner

from papyrus.cli.main import app as cli
from papyrus.server.app import create_app
from papyrus.server.config import Settings
from papyrus.server.powersync import keys
from tests.conftest import make_settings, register
from tests.server.powersync.conftest import fetch_jwks, issue, verify


def _private_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_development_generates_a_private_key_once_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, DATA_DIR=tmp_path)
    first = keys.load_keyset(settings)
    path = tmp_path / "keys" / "powersync-current.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.current.private_key.key_size >= 2048
    assert keys.load_keyset(settings).current.kid == first.current.kid
    assert first.previous is None
    assert first.current.kid == keys.thumbprint(first.current.private_key.public_key())


def test_keys_load_from_inline_pem_and_files(tmp_path: Path) -> None:
    current, previous = _private_pem(), _private_pem()
    inline = keys.load_keyset(
        Settings(
            _env_file=None,
            DATA_DIR=tmp_path,
            POWERSYNC_JWT_PRIVATE_KEY=current,
            POWERSYNC_JWT_KEY_ID="k2",
            POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY=_public_pem(previous),
            POWERSYNC_JWT_PREVIOUS_KEY_ID="k1",
        )
    )
    assert [k["kid"] for k in inline.jwks()["keys"]] == ["k2", "k1"]
    assert not (tmp_path / "keys").exists(), "nothing generated when keys are configured"

    (tmp_path / "cur.pem").write_text(current)
    (tmp_path / "prev.pem").write_text(previous)  # a private PEM works as the previous key too
    from_files = keys.load_keyset(
        Settings(
            _env_file=None,
            DATA_DIR=tmp_path,
            POWERSYNC_JWT_PRIVATE_KEY_FILE=tmp_path / "cur.pem",
            POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE=tmp_path / "prev.pem",
        )
    )
    assert from_files.jwks()["keys"][0]["n"] == inline.jwks()["keys"][0]["n"]
    assert from_files.jwks()["keys"][1]["n"] == inline.jwks()["keys"][1]["n"]


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        ("not a key", "is not an unencrypted PEM private key"),
        (_private_pem(1024), "must be an RSA key of at least 2048 bits"),
    ],
)
def test_unusable_keys_are_refused_with_a_clear_message(
    tmp_path: Path, pem: str, message: str
) -> None:
    settings = Settings(_env_file=None, DATA_DIR=tmp_path, POWERSYNC_JWT_PRIVATE_KEY=pem)
    with pytest.raises(keys.KeyConfigError, match=message):
        keys.load_keyset(settings)
    missing = Settings(
        _env_file=None, DATA_DIR=tmp_path, POWERSYNC_JWT_PRIVATE_KEY_FILE=tmp_path / "nope.pem"
    )
    with pytest.raises(keys.KeyConfigError, match="cannot read POWERSYNC_JWT_PRIVATE_KEY_FILE"):
        keys.load_keyset(missing)


def test_production_refuses_to_start_without_a_signing_key(monkeypatch) -> None:
    for name in ("POWERSYNC_JWT_PRIVATE_KEY", "POWERSYNC_JWT_PRIVATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError) as excinfo:
        Settings(
            _env_file=None,
            PAPYRUS_ENV="production",
            DATABASE_URL="postgresql://u:p@db/papyrus",
            ACCESS_TOKEN_SECRET="s" * 40,
        )
    assert "production start refused" in str(excinfo.value)
    assert "POWERSYNC_JWT_PRIVATE_KEY_FILE" in str(excinfo.value)


def test_production_fails_at_start_on_an_unreadable_key(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        tmp_path,
        database_url,
        PAPYRUS_ENV="production",
        POWERSYNC_JWT_PRIVATE_KEY_FILE=tmp_path / "missing.pem",
    )
    with pytest.raises(keys.KeyConfigError), TestClient(create_app(settings)):
        pass
    assert not (tmp_path / "data" / "keys").exists(), "production never generates keys"


def test_both_inline_and_file_is_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="either POWERSYNC_JWT_PRIVATE_KEY or"):
        Settings(
            _env_file=None,
            POWERSYNC_JWT_PRIVATE_KEY=_private_pem(),
            POWERSYNC_JWT_PRIVATE_KEY_FILE=tmp_path / "k.pem",
        )


def test_rotation_keeps_tokens_already_issued_valid_until_they_expire(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(tmp_path, database_url)
    with TestClient(create_app(settings)) as client:
        access = register(client)["access_token"]
        old_token = issue(client, access)
        old_kid = fetch_jwks(client)["keys"][0]["kid"]

    rotation = keys.rotate(settings)
    assert rotation.previous_kid == old_kid and rotation.new_kid != old_kid
    previous_file = tmp_path / "data" / "keys" / "powersync-previous.pem"
    assert previous_file.exists() and b"PRIVATE" not in previous_file.read_bytes()
    current_file = tmp_path / "data" / "keys" / "powersync-current.pem"
    assert stat.S_IMODE(current_file.stat().st_mode) == 0o600

    with TestClient(create_app(settings)) as client:  # a restart picks the rotated keys up
        jwks = fetch_jwks(client)
        assert [k["kid"] for k in jwks["keys"]] == [rotation.new_kid, old_kid]
        new_token = issue(client, access)
        assert verify(new_token, jwks).header["kid"] == rotation.new_kid
        claims = verify(old_token, jwks).claims  # still valid
        with pytest.raises(JoseError):
            verify(old_token, jwks, now=claims["exp"] + 1)  # until it expires

    with pytest.raises(keys.KeyConfigError, match="became current"):
        keys.rotate(settings)  # would drop a key whose tokens may be live

    later = time.time() + settings.POWERSYNC_TOKEN_TTL_SECONDS + 1
    third = keys.rotate(settings, now=later)
    assert third.previous_kid == rotation.new_kid
    with TestClient(create_app(settings)) as client:
        jwks = fetch_jwks(client)
        assert [k["kid"] for k in jwks["keys"]] == [third.new_kid, rotation.new_kid]
        with pytest.raises(JoseError):
            verify(old_token, jwks)  # two rotations later: its key is gone


def test_file_keys_rotate_in_place(tmp_path: Path) -> None:
    current = tmp_path / "secrets" / "ps.pem"
    settings = Settings(
        _env_file=None,
        DATA_DIR=tmp_path,
        POWERSYNC_JWT_PRIVATE_KEY_FILE=current,
        POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE=tmp_path / "secrets" / "ps-previous.pem",
    )
    created = keys.rotate(settings)  # no key yet: creates the first one
    assert created.previous_kid is None
    assert stat.S_IMODE(current.stat().st_mode) == 0o600
    assert keys.load_keyset(settings).previous is None
    rotated = keys.rotate(settings)
    assert rotated.previous_kid == created.new_kid
    loaded = keys.load_keyset(settings)
    assert loaded.current.kid == rotated.new_kid and loaded.previous.kid == created.new_kid

    without_previous = Settings(_env_file=None, POWERSYNC_JWT_PRIVATE_KEY_FILE=current)
    with pytest.raises(keys.KeyConfigError, match="set POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE"):
        keys.rotate(without_previous)
    inline = Settings(_env_file=None, POWERSYNC_JWT_PRIVATE_KEY=_private_pem())
    with pytest.raises(keys.KeyConfigError, match="inline"):
        keys.rotate(inline)


def test_papyrus_keys_rotate_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in list(os.environ):
        if name.startswith("POWERSYNC_"):
            monkeypatch.delenv(name)
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "rotate", "--data-dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    assert "created the first one" in created.output
    first = runner.invoke(cli, ["keys", "rotate", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "previous key:" in first.output and "Restart the server" in first.output
    assert "PRIVATE KEY" not in first.output
    again = runner.invoke(cli, ["keys", "rotate", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1 and "--force" in again.output
    forced = runner.invoke(cli, ["keys", "rotate", "--data-dir", str(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output
    settings = Settings(_env_file=None, DATA_DIR=tmp_path)
    assert len(keys.load_keyset(settings).jwks()["keys"]) == 2


def test_blank_settings_copied_from_env_example_mean_unset(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        DATA_DIR=tmp_path,
        POWERSYNC_JWT_PRIVATE_KEY_FILE="",
        POWERSYNC_JWT_PRIVATE_KEY="",
        POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE="",
        POWERSYNC_JWT_KEY_ID="",
    )
    assert settings.POWERSYNC_JWT_PRIVATE_KEY_FILE is None
    keyset = keys.load_keyset(settings)
    assert (tmp_path / "keys" / "powersync-current.pem").exists()
    assert keyset.current.kid == keys.thumbprint(keyset.current.private_key.public_key())
