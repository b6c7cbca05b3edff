"""Resolving where the database lives before the API starts: given, or embedded."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from papyrus.server import migrate
from papyrus.server.config import Settings

if TYPE_CHECKING:
    from papyrus.embedded_db import EmbeddedPostgres

log = logging.getLogger(__name__)


class Database:
    """The database for one `papyrus` command; owns the embedded server if it started one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._embedded: EmbeddedPostgres | None = None

    def start(self) -> str:
        if self.settings.DATABASE_URL:
            log.info("database: DATABASE_URL (external server)")
            return self.settings.DATABASE_URL
        from papyrus.embedded_db import EmbeddedPostgres

        embedded = self._embedded = EmbeddedPostgres(self.settings.DATA_DIR)
        info = embedded.start()
        log.info("database: embedded PostgreSQL on 127.0.0.1:%s (%s)", info.port, embedded.pgdata)
        self.settings.DATABASE_URL = info.url()
        return info.url()

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None


def settings_for(data_dir: Path | None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings.DATA_DIR = data_dir
    return settings


def export_to_children(settings: Settings) -> None:
    """Worker processes and child services read their settings from the environment."""
    os.environ["DATA_DIR"] = str(Path(settings.DATA_DIR).resolve())
    os.environ["DATABASE_URL"] = settings.database_url()


def prepare_secrets(settings: Settings) -> None:
    """Creates development secrets and keys once, before child processes read them."""
    _ = settings.access_token_secret
    from papyrus.server.powersync import keys

    keys.load_keyset(settings)


def apply_migrations(settings: Settings) -> None:
    log.info("applying migrations")
    migrate.upgrade(settings.database_url())
