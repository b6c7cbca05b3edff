"""`papyrus sync-service`: register with `app.command("sync-service")(sync_service)`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer


def sync_service(
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL of the source database (env DATABASE_URL)."),
    ] = None,
    jwks_uri: Annotated[
        str | None,
        typer.Option(help="JWKS URL of the Papyrus API (env POWERSYNC_JWKS_URI)."),
    ] = None,
    audience: Annotated[
        list[str] | None,
        typer.Option(help="Accepted JWT audience; repeatable (env POWERSYNC_JWT_AUDIENCE)."),
    ] = None,
    sync_config: Annotated[
        Path | None,
        typer.Option(help="Sync config file (default: the packaged sync-config.yaml)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the sync service.")] = 8081,
) -> None:
    """Run the development sync service that PowerSync SDKs connect to."""
    from papyrus.devsync.config import Settings
    from papyrus.devsync.service import serve
    from papyrus.devsync.sync_rules import SyncConfigError

    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(
            database_url=database_url,
            jwks_uri=jwks_uri,
            audiences=tuple(audience) if audience else None,
            sync_config_path=sync_config,
            host=host,
            port=port,
        )
        serve(settings)
    except (SyncConfigError, ValueError, OSError) as exc:
        typer.echo(f"sync-service: {exc}", err=True)
        raise typer.Exit(2) from exc
