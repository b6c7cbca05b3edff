"""TokenStore: the refresh token persists (keyring or a 0600 file); the access token never."""

from __future__ import annotations

import stat
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend as BaseKeyring

from papyrus.client import FileBackend, KeyringBackend, PapyrusApiConfig, TokenStore
from papyrus.client.tokens import keyring_usable


class MemoryKeyring(BaseKeyring):
    priority = 10  # type: ignore[assignment]

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.values.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.values[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.values.pop((service, username), None)


def test_file_store_is_private_and_survives_a_new_process(tmp_path: Path) -> None:
    config = PapyrusApiConfig(data_dir=tmp_path / "c", token_store="file")
    store = TokenStore.for_config(config)
    store.access_token = "access-in-memory"
    store.save_refresh_token("refresh-1")
    path = tmp_path / "c" / "refresh-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert "access-in-memory" not in path.read_text()
    again = TokenStore.for_config(config)  # as a new process would
    assert again.load_refresh_token() == "refresh-1" and again.access_token is None
    again.save_refresh_token("refresh-2")
    assert again.load_refresh_token() == "refresh-2"
    again.clear()
    assert not path.exists() and again.load_refresh_token() is None


def test_keyring_is_used_when_a_real_backend_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(memory)
    try:
        assert keyring_usable()
        store = TokenStore.for_config(PapyrusApiConfig(data_dir=tmp_path, token_store="auto"))
        assert isinstance(store.backend, KeyringBackend)
        store.save_refresh_token("in-keyring")
        assert list(memory.values.values()) == ["in-keyring"]
        assert not (tmp_path / "refresh-token").exists()
        other = TokenStore.for_config(PapyrusApiConfig(data_dir=tmp_path / "other"))
        assert other.load_refresh_token() is None  # one entry per data directory
        store.clear()
        assert memory.values == {}
    finally:
        keyring.set_keyring(previous)


def test_without_a_usable_keyring_the_file_is_used(tmp_path: Path) -> None:
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        store = TokenStore.for_config(PapyrusApiConfig(data_dir=tmp_path, token_store="auto"))
        assert isinstance(store.backend, FileBackend)
    finally:
        keyring.set_keyring(previous)


def test_config_from_environment(tmp_path: Path) -> None:
    config = PapyrusApiConfig.from_environment(
        {
            "PAPYRUS_API_URL": "http://api.test:9000/",
            "POWERSYNC_SERVICE_URL": "http://sync.test:9001",
            "PAPYRUS_CLIENT_DIR": str(tmp_path),
            "PAPYRUS_TOKEN_STORE": "file",
        }
    )
    assert config.api_url == "http://api.test:9000"  # no trailing slash: no "//v1"
    assert config.powersync_url == "http://sync.test:9001"
    assert config.account_database_path == tmp_path / "papyrus-account.db"
    assert config.guest_database_path == tmp_path / "papyrus-guest.db"
    defaults = PapyrusApiConfig.from_environment({"XDG_DATA_HOME": str(tmp_path)})
    assert defaults.api_url == "http://localhost:8080"
    assert defaults.powersync_url == "http://localhost:8081"
    with pytest.raises(ValueError):
        PapyrusApiConfig.from_environment({"PAPYRUS_TOKEN_STORE": "pigeon"})
