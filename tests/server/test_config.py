import stat

import pytest
from pydantic import ValidationError

from papyrus.server.config import Settings


def test_production_refuses_to_start_without_secrets(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ACCESS_TOKEN_SECRET", raising=False)
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None, PAPYRUS_ENV="production")
    message = str(excinfo.value)
    assert "production start refused" in message
    assert "DATABASE_URL" in message
    assert "ACCESS_TOKEN_SECRET" in message


def test_development_generates_secrets_once_with_private_permissions(tmp_path) -> None:
    settings = Settings(_env_file=None, DATA_DIR=tmp_path)
    secret = settings.access_token_secret
    path = tmp_path / "secrets" / "access-token-secret"
    assert len(secret) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(_env_file=None, DATA_DIR=tmp_path).access_token_secret == secret


def test_database_url_is_rewritten_to_the_psycopg_driver() -> None:
    settings = Settings(_env_file=None, DATABASE_URL="postgres://u:p@db:5432/papyrus")
    assert settings.DATABASE_URL == "postgresql+psycopg://u:p@db:5432/papyrus"
