"""The `papyrus` command line."""

from __future__ import annotations

import errno
import functools
import importlib.metadata
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer

from papyrus.client import cli as client_cli
from papyrus.devsync.cli import sync_service

if TYPE_CHECKING:
    from papyrus.server.config import Settings
    from papyrus.server.mail.catcher import CaughtMail, MailCatcher

P = ParamSpec("P")
R = TypeVar("R")


def missing_server_requirements() -> list[str]:
    """The distributions of the `server` extra that are not installed (none in a checkout's
    development install; most of them in a client-only `pip install papyrus`)."""
    try:
        requirements = importlib.metadata.requires("papyrus") or []
    except importlib.metadata.PackageNotFoundError:
        return []  # not installed (run from a source tree): nothing to compare with
    missing = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        if not re.search(r"""extra\s*==\s*["']server["']""", marker):
            continue
        name = re.match(r"[A-Za-z0-9._-]+", spec.strip())
        if name is None:
            continue
        try:
            importlib.metadata.distribution(name.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(name.group(0))
    return missing


def needs_server(command: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Server commands in a client-only install end with one line saying what to install."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            missing = missing_server_requirements()
            if missing:
                typer.echo(
                    f"papyrus {command} needs the server components ({', '.join(missing)} "
                    "missing): pip install 'papyrus[server]'",
                    err=True,
                )
                raise typer.Exit(2)
            return function(*args, **kwargs)

        return run

    return decorate


app = typer.Typer(no_args_is_help=True, help="Papyrus: auth and sync backbone of a reading app.")
client_cli.install(app)  # register, login, login-google, logout, status, offline, books, sync
app.command("sync-service")(needs_server("sync-service")(sync_service))
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")
keys_app = typer.Typer(no_args_is_help=True, help="PowerSync token signing keys.")
app.add_typer(keys_app, name="keys")
mail_app = typer.Typer(no_args_is_help=True, help="Outgoing mail.")
app.add_typer(mail_app, name="mail")

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


def _die(command: str, message: str) -> NoReturn:
    typer.echo(f"papyrus {command}: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _startup_errors(command: str) -> Iterator[None]:
    """Configuration mistakes and start-up failures of the server commands become one line on
    stderr and exit code 1, not a traceback."""
    from psycopg import OperationalError as PsycopgOperationalError
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError as SqlAlchemyOperationalError

    from papyrus.server.powersync.keys import KeyConfigError

    try:
        yield
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            text = str(err.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"{where}: {text}" if where else text)
        _die(command, "invalid configuration: " + "; ".join(problems))
    except SqlAlchemyOperationalError as exc:
        _die(command, f"cannot use the database: {_first_line(exc.orig or exc)}")
    except PsycopgOperationalError as exc:
        _die(command, f"cannot use the database: {_first_line(exc)}")
    except subprocess.CalledProcessError as exc:  # the embedded PostgreSQL's tools logged why
        tool = Path(str(exc.cmd[0] if isinstance(exc.cmd, list) else exc.cmd)).name
        _die(command, f"{tool} failed with status {exc.returncode} (see its output above)")
    except KeyConfigError as exc:
        _die(command, _first_line(exc))
    except RuntimeError as exc:  # e.g. pg_ctl failed: its message carries the server log
        _die(command, str(exc).strip() or type(exc).__name__)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _die(command, f"cannot use{where}: {exc.strerror or exc}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_port(command: str, host: str, port: int, option: str) -> None:
    """Fails before anything starts when the port is taken (uvicorn would only log it, after
    the database had been started and migrated)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        _die(command, f"cannot listen on {host}: {exc.strerror}")
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _die(
                    command,
                    f"port {port} on {host} is already in use (another papyrus running?); "
                    f"choose another with {option}",
                )
            _die(command, f"cannot listen on {host}:{port}: {exc.strerror}")


@contextmanager
def _running_database(data_dir: Path | None) -> Iterator[Settings]:
    """The configured database, up for the block: embedded (started and stopped here) unless
    DATABASE_URL is set."""
    from papyrus.server import runtime

    _logging()
    settings = runtime.settings_for(data_dir)
    database = runtime.Database(settings)
    database.start()
    try:
        yield settings
    finally:
        database.stop()


def _prepare(settings: Settings, migrate: bool) -> None:
    """Migrate, and create generated secrets once, before child processes race for them."""
    from papyrus.server import runtime

    if migrate:
        runtime.apply_migrations(settings)
    runtime.prepare_secrets(settings)
    runtime.export_to_children(settings)


@app.command()
@needs_server("serve")
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    data_dir: DataDirOpt = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    no_migrate: NoMigrateOpt = False,
) -> None:
    """Run the API (with the embedded database unless DATABASE_URL is set)."""
    import uvicorn

    _check_port("serve", host, port, "--port")
    with _startup_errors("serve"), _running_database(data_dir) as settings:
        try:
            _prepare(settings, migrate=not no_migrate)
            _sigterm_as_ctrl_c()
            uvicorn.run(
                "papyrus.server.app:app_from_environment",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_level=settings.LOG_LEVEL.lower(),
                # The application believes X-Forwarded-* only from FORWARDED_ALLOW_IPS (none by
                # default); uvicorn's own handling would trust 127.0.0.1 whatever is configured.
                proxy_headers=False,
            )
        except KeyboardInterrupt:
            pass  # Ctrl-C or SIGTERM: a normal stop
        except SystemExit as exc:  # uvicorn's own start-up failure (it logged why)
            if exc.code not in (0, None):
                _die("serve", f"the API could not start on {host}:{port} (see the log above)")
            raise


@app.command()
@needs_server("dev")
def dev(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8080,
    sync_port: Annotated[
        int, typer.Option(help="TCP port of the development sync service.")
    ] = 8081,
    data_dir: DataDirOpt = None,
    no_migrate: NoMigrateOpt = False,
    mail_port: Annotated[
        int,
        typer.Option(help="Port of the local mail catcher on 127.0.0.1 [default: any free one]."),
    ] = 0,
    no_mail_catcher: Annotated[
        bool,
        typer.Option(
            "--no-mail-catcher", help="Send mail with the SMTP_* settings instead of catching it."
        ),
    ] = False,
) -> None:
    """Run everything this repository can run on one machine: database, API, sync service, and
    a mail catcher that keeps every message under <data-dir>/mail and prints its links."""
    children: list[subprocess.Popen[bytes]] = []
    if port == sync_port:
        _die("dev", f"--port and --sync-port are both {port}; give them different ports")
    _check_port("dev", host, port, "--port")
    _check_port("dev", host, sync_port, "--sync-port")
    if mail_port and not no_mail_catcher:
        _check_port("dev", "127.0.0.1", mail_port, "--mail-port")
    catcher = None
    with _startup_errors("dev"), _running_database(data_dir) as settings:
        try:
            _prepare(settings, migrate=not no_migrate)
            if not no_mail_catcher:
                catcher = _start_mail_catcher(Path(settings.DATA_DIR) / "mail", mail_port)
            me = [sys.executable, "-m", "papyrus.cli.main"]
            api_url = f"http://{_loopback(host)}:{port}"
            if "PUBLIC_BASE_URL" not in settings.model_fields_set:
                # Mailed links and the Google callback point at this API, whatever its port.
                os.environ["PUBLIC_BASE_URL"] = _browser_url(host, port)
            children.append(
                subprocess.Popen(
                    [*me, "serve", "--no-migrate", "--host", host, "--port", str(port)]
                )
            )
            children.append(
                subprocess.Popen(
                    [
                        *me,
                        "sync-service",
                        "--jwks-uri",
                        f"{api_url}/v1/auth/jwks",
                        "--audience",
                        settings.POWERSYNC_JWT_AUDIENCE,
                        "--host",
                        host,
                        "--port",
                        str(sync_port),
                    ]
                )
            )
            typer.echo(f"API on {api_url}, sync service on http://{_loopback(host)}:{sync_port}")
            _supervise(children)
        finally:
            _terminate(children)
            if catcher is not None:
                catcher.stop()


def _start_mail_catcher(directory: Path, port: int) -> MailCatcher:
    """Catches the dev API's mail: the API (started after this) sends to it over plain SMTP on
    loopback; each message is kept as an .eml file and announced with its links."""
    from papyrus.server.mail.catcher import MailCatcher

    def announce(mail: CaughtMail) -> None:
        typer.echo(f"mail to {', '.join(mail.recipients)}: {mail.subject}")
        for link in mail.links:
            typer.echo(f"  {link}")
        typer.echo(f"  (kept in {mail.path})")

    catcher = MailCatcher(directory, port=port, on_message=announce).start()
    os.environ.update(SMTP_HOST="127.0.0.1", SMTP_PORT=str(catcher.port), SMTP_SECURITY="none")
    for name in ("SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_TLS_CA_FILE"):
        os.environ[name] = ""
    typer.echo(f"mail catcher on 127.0.0.1:{catcher.port}, messages kept in {directory}")
    return catcher


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def _browser_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches the API: `localhost` for a loopback or
    wildcard address, the name the documented Google redirect URI and the client use."""
    if host in ("127.0.0.1", "::1", "0.0.0.0", "::", "localhost"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@db_app.command("upgrade")
@needs_server("db upgrade")
def db_upgrade(data_dir: DataDirOpt = None) -> None:
    """Apply pending migrations."""
    from papyrus.server import runtime

    with _startup_errors("db upgrade"), _running_database(data_dir) as settings:
        runtime.apply_migrations(settings)


@db_app.command("setup-replication")
@needs_server("db setup-replication")
def db_setup_replication(data_dir: DataDirOpt = None) -> None:
    """Prepare PostgreSQL for the PowerSync service: check wal_level, ensure the `powersync`
    publication and the replication role (POWERSYNC_REPLICATION_ROLE / _PASSWORD)."""
    from papyrus.server.powersync import replication

    with _startup_errors("db setup-replication"), _running_database(data_dir) as settings:
        try:
            report = replication.setup_replication(
                settings.database_url(),
                settings.POWERSYNC_REPLICATION_ROLE,
                settings.powersync_replication_password,
            )
        except (replication.ReplicationSetupError, RuntimeError) as exc:
            typer.echo(f"setup-replication: {exc}", err=True)
            raise typer.Exit(1) from None
    for action in report.actions:
        typer.echo(action)
    if not settings.POWERSYNC_REPLICATION_PASSWORD:
        where = Path(settings.DATA_DIR) / "secrets" / "powersync-replication-password"
        typer.echo(f"the role's development password is in {where}")


@keys_app.command("rotate")
@needs_server("keys rotate")
def keys_rotate(
    data_dir: DataDirOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rotate even if the previous key may still be in use.")
    ] = False,
) -> None:
    """Make the current PowerSync signing key the previous one and create a new current key."""
    from papyrus.server import runtime
    from papyrus.server.powersync import keys

    _logging()
    with _startup_errors("keys rotate"):
        settings = runtime.settings_for(data_dir)
    try:
        rotation = keys.rotate(settings, force=force)
    except keys.KeyConfigError as exc:
        typer.echo(f"keys rotate: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"current key:  {rotation.new_kid}  ({rotation.current_path})")
    if rotation.previous_kid is None:
        typer.echo("There was no key yet: created the first one.")
        return
    typer.echo(f"previous key: {rotation.previous_kid}  ({rotation.previous_path})")
    if settings.POWERSYNC_JWT_KEY_ID or settings.POWERSYNC_JWT_PREVIOUS_KEY_ID:
        typer.echo(
            "Key ids are set explicitly: set POWERSYNC_JWT_PREVIOUS_KEY_ID to the old "
            "POWERSYNC_JWT_KEY_ID and give POWERSYNC_JWT_KEY_ID a new value (or unset both to "
            "use the ids above)."
        )
    typer.echo(
        "Restart the server processes to sign with the new key; tokens signed with the "
        "previous key stay valid until they expire."
    )


@mail_app.command("outbox")
@needs_server("mail outbox")
def mail_outbox(data_dir: DataDirOpt = None) -> None:
    """Messages not delivered yet: pending ones with their next attempt, failed ones with why
    (a failed message is not sent again: its owner asks for a new link)."""
    from papyrus.server.mail.outbox import list_outbox

    with _startup_errors("mail outbox"), _running_database(data_dir) as settings:
        entries = list_outbox(settings.database_url())
    if not entries:
        typer.echo("The outbox is empty: every message was delivered.")
        return
    for entry in entries:
        when = (
            f"failed {entry.failed_at:%Y-%m-%d %H:%M:%S}"
            if entry.failed_at is not None
            else f"next attempt {entry.next_attempt_at:%Y-%m-%d %H:%M:%S}"
        )
        typer.echo(
            f"{entry.id:>6}  {entry.status:<7}  {entry.kind:<20}  {entry.recipient}  "
            f"attempts {entry.attempts}  {when}"
            + (f"  ({entry.last_error})" if entry.last_error else "")
        )
    failed = sum(entry.status == "failed" for entry in entries)
    typer.echo(f"{len(entries) - failed} pending, {failed} failed")


def _sigterm_as_ctrl_c() -> None:
    """SIGTERM raises KeyboardInterrupt, so `finally` blocks (stopping the embedded database) run.

    uvicorn re-raises the signals it captured once it has shut down; without this, SIGTERM's
    default action would end the process before the database is stopped.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _supervise(children: list[subprocess.Popen[bytes]]) -> None:
    """Waits until a signal arrives or a child dies; SIGTERM is treated like Ctrl-C."""
    _sigterm_as_ctrl_c()
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        for child in children:
            if child.returncode not in (None, 0):
                name = "the API" if child is children[0] else "the sync service"
                _die("dev", f"{name} exited with status {child.returncode} (see the log above)")
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
