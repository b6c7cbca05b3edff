"""The `papyrus` command line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Papyrus: auth and sync backbone of a reading app.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")

HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(help="TCP port of the API.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Where the embedded database, dev keys and secrets live [default: .local]."),
]
NoMigrateOpt = Annotated[bool, typer.Option("--no-migrate", help="Skip applying migrations.")]


def _logging() -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    data_dir: DataDirOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    no_migrate: NoMigrateOpt = False,
) -> None:
    """Run the API (with the embedded database unless DATABASE_URL is set)."""
    import uvicorn

    from papyrus.server import runtime

    _logging()
    settings = runtime.settings_for(data_dir)
    database = runtime.Database(settings)
    database.start()
    try:
        if not no_migrate:
            runtime.apply_migrations(settings)
        _ = settings.access_token_secret  # create dev secrets once, before workers race for them
        runtime.export_to_children(settings)
        uvicorn.run(
            "papyrus.server.app:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=settings.LOG_LEVEL.lower(),
        )
    finally:
        database.stop()


@app.command()
def dev(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    data_dir: DataDirOpt = None,
    no_migrate: NoMigrateOpt = False,
) -> None:
    """Run everything this repository can run on one machine."""
    from papyrus.server import runtime

    _logging()
    settings = runtime.settings_for(data_dir)
    database = runtime.Database(settings)
    database.start()
    children: list[subprocess.Popen[bytes]] = []
    try:
        if not no_migrate:
            runtime.apply_migrations(settings)
        _ = settings.access_token_secret
        runtime.export_to_children(settings)
        me = [sys.executable, "-m", "papyrus.cli.main"]
        children.append(
            subprocess.Popen([*me, "serve", "--no-migrate", "--host", host, "--port", str(port)])
        )
        _supervise(children)
    finally:
        _terminate(children)
        database.stop()


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None) -> None:
    """Apply pending migrations."""
    from papyrus.server import runtime

    _logging()
    settings = runtime.settings_for(data_dir)
    database = runtime.Database(settings)
    database.start()
    try:
        runtime.apply_migrations(settings)
    finally:
        database.stop()


def _supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Waits until a signal arrives or a child dies; SIGTERM is treated like Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        failed = [c.args for c in children if c.returncode not in (None, 0)]
        if failed:
            typer.echo(f"a service exited unexpectedly: {failed}", err=True)
            raise typer.Exit(1)
    except KeyboardInterrupt:
        pass


def _terminate(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    app()
