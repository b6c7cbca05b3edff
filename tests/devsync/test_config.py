"""Settings and start-up refusal of unsupported sync configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from papyrus.devsync.config import Settings, plain_conninfo
from papyrus.devsync.service import DevSyncService
from papyrus.devsync.sync_rules import SyncConfigError


def test_sqlalchemy_urls_are_accepted() -> None:
    url = "postgresql+psycopg://papyrus:pw@127.0.0.1:5432/papyrus"
    assert plain_conninfo(url) == "postgresql://papyrus:pw@127.0.0.1:5432/papyrus"
    settings = Settings(database_url=url, jwks_uri="http://x/jwks")
    assert settings.conninfo.startswith("postgresql://")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("POWERSYNC_JWKS_URI", "http://api/.well-known/jwks.json")
    monkeypatch.setenv("POWERSYNC_JWT_AUDIENCE", "a, b")
    settings = Settings.from_env(port=9999)
    assert settings.audiences == ("a", "b")
    assert settings.port == 9999
    monkeypatch.delenv("POWERSYNC_JWKS_URI")
    with pytest.raises(ValueError, match="jwks_uri"):
        Settings.from_env()


def test_service_refuses_unsupported_config_at_start(tmp_path: Path) -> None:
    config = tmp_path / "sync-config.yaml"
    config.write_text(
        "config:\n  edition: 2\nstreams:\n  s:\n    auto_subscribe: true\n"
        "    query: SELECT * FROM books b JOIN shelves s ON s.id = b.shelf_id\n"
    )
    settings = Settings(
        database_url="postgresql://u@127.0.0.1:1/db", jwks_uri="http://x", sync_config_path=config
    )
    with pytest.raises(SyncConfigError, match="JOIN is not supported"):
        DevSyncService(settings)
