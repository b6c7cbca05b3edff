"""Static checks of the deployment files (no Docker engine here): they parse, agree with each
other, with .env.example, with Settings, and with the migrated schema."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import yaml
from pglast import ast, parse_sql

from papyrus.server.config import Settings
from tests.conftest import ROOT, SYNC_CONFIG

COMPOSE = ROOT / "docker-compose.yml"
SERVICE = ROOT / "server" / "powersync" / "service.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"


class _EnvTag(str):
    """`!env NAME` as the PowerSync service reads it."""


def _load_service_yaml() -> dict[str, Any]:
    loader = type("ServiceLoader", (yaml.SafeLoader,), {})
    loader.add_constructor("!env", lambda ld, node: _EnvTag(ld.construct_scalar(node)))
    return yaml.load(SERVICE.read_text(), Loader=loader)


def _env_refs(value: Any) -> list[str]:
    if isinstance(value, _EnvTag):
        return [str(value).split("::")[0]]
    if isinstance(value, dict):
        return [ref for item in value.values() for ref in _env_refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _env_refs(item)]
    return []


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _documented() -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))


def test_every_variable_compose_interpolates_is_documented() -> None:
    referenced = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    assert {"POSTGRES_PASSWORD", "PS_STORAGE_PASSWORD", "ACCESS_TOKEN_SECRET"} <= referenced
    assert referenced - _documented() == set()


def test_papyrus_service_settings_exist_and_production_requirements_are_met(compose) -> None:
    papyrus = compose["services"]["papyrus"]
    environment = papyrus["environment"]
    assert set(environment) - set(Settings.model_fields) == set(), "unknown settings"
    assert environment["PAPYRUS_ENV"] == "production"
    for name in Settings.required_in_production():
        assert environment.get(name), name
    assert environment["POWERSYNC_JWT_PRIVATE_KEY_FILE"].startswith("/keys/")
    assert environment["POWERSYNC_JWT_PREVIOUS_PUBLIC_KEY_FILE"].startswith("/keys/")
    assert "keys:/keys" in papyrus["volumes"]
    script = "\n".join(papyrus["command"])
    for step in ("papyrus keys rotate", "papyrus db upgrade", "papyrus db setup-replication"):
        assert step in script
    assert script.index("setup-replication") < script.index("papyrus serve")


def test_source_database_has_logical_wal_and_storage_is_separate(compose) -> None:
    services = compose["services"]
    assert "wal_level=logical" in services["db"]["command"]
    assert services["db"]["image"].startswith("postgres:")
    assert services["bucket-storage"]["image"].startswith("postgres:")
    storage_uri = services["powersync"]["environment"]["PS_STORAGE_SOURCE_URI"]
    source_uri = services["powersync"]["environment"]["PS_DATA_SOURCE_URI"]
    assert "@bucket-storage:" in storage_uri and "@db:" in source_uri
    assert source_uri.startswith("postgresql://${POWERSYNC_REPLICATION_ROLE")


def test_powersync_service_is_pinned_and_configured(compose) -> None:
    powersync = compose["services"]["powersync"]
    assert re.fullmatch(r"journeyapps/powersync-service:1\.25\.\d+", powersync["image"])
    assert powersync["command"] == ["start", "-r", "unified"]
    assert "./server/powersync/service.yaml:/config/service.yaml:ro" in powersync["volumes"]
    environment = powersync["environment"]
    assert environment["POWERSYNC_CONFIG_PATH"] == "/config/service.yaml"
    assert environment["PS_JWKS_URL"] == "http://papyrus:8080/v1/auth/jwks"
    assert (
        environment["PS_JWT_AUDIENCE"]
        == compose["services"]["papyrus"]["environment"]["POWERSYNC_JWT_AUDIENCE"]
    )
    assert powersync["depends_on"]["papyrus"]["condition"] == "service_healthy"

    config = _load_service_yaml()
    refs = _env_refs(config)
    assert all(ref.startswith("PS_") for ref in refs), "the service only substitutes PS_*"
    assert set(refs) - set(environment) == set(), "every !env variable is set in compose"
    [connection] = config["replication"]["connections"]
    assert connection["type"] == "postgresql" and connection["uri"] == "PS_DATA_SOURCE_URI"
    assert config["storage"]["type"] == "postgresql"
    assert config["storage"]["uri"] == "PS_STORAGE_SOURCE_URI"
    assert config["client_auth"]["jwks_uri"] == "PS_JWKS_URL"
    assert config["client_auth"]["audience"] == ["PS_JWT_AUDIENCE"]
    # The sync config the service reads is the packaged file, mounted next to service.yaml.
    mounted = f"./{SYNC_CONFIG.relative_to(ROOT)}:/config/{config['sync_config']['path']}:ro"
    assert mounted in powersync["volumes"]


def test_dockerfile_runs_the_server_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert re.search(r"^USER papyrus$", text, re.M)
    assert '"papyrus", "serve"' in text


def _books_query() -> tuple[dict[str, Any], str]:
    config = yaml.safe_load(SYNC_CONFIG.read_text())
    return config, config["streams"]["books"]["query"]


def test_sync_config_is_an_auto_subscribed_edition_3_stream_of_the_users_books() -> None:
    config, query = _books_query()
    assert config["config"]["edition"] == 3
    assert config["streams"]["books"]["auto_subscribe"] is True
    [raw] = parse_sql(query)
    select = raw.stmt
    assert [t.relname for t in select.fromClause] == ["books"]
    where = select.whereClause
    assert isinstance(where, ast.A_Expr) and where.name[0].sval == "="
    assert where.lexpr.fields[0].sval == "owner_user_id"
    assert [n.sval for n in where.rexpr.funcname] == ["auth", "user_id"]


def test_sync_config_columns_exist_and_come_out_as_the_client_schema_expects(
    sql, pg_server, database_name
) -> None:
    """Runs the stream query on the migrated schema, with auth.user_id() bound to a user."""
    columns = {
        name: data_type
        for name, data_type in sql(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'books'"
        )
    }
    _, query = _books_query()
    select = parse_sql(query)[0].stmt
    selected = []
    for target in select.targetList:
        value = target.val.arg if isinstance(target.val, ast.TypeCast) else target.val
        source = value.fields[-1].sval
        assert source in columns, f"{source} is not a column of books"
        selected.append(target.name or source)
        if columns[source] == "jsonb":  # JSON columns reach SQLite as JSON text
            assert isinstance(target.val, ast.TypeCast), source
            assert target.val.typeName.names[-1].sval == "text", source
    assert set(selected) == set(columns), "every column is synced, none invented"

    user_id, book_id = uuid.uuid4(), uuid.uuid4()
    sql(
        "INSERT INTO users (id, email, email_verified, display_name) VALUES (%s, %s, false, 'x')",
        (user_id, f"{user_id}@example.com"),
    )
    sql(
        "INSERT INTO books (id, owner_user_id, title, co_authors, custom_metadata) "
        "VALUES (%s, %s, 'T', '[\"A\"]', '{\"k\": 1}')",
        (book_id, user_id),
    )
    [row] = sql(query.replace("auth.user_id()", "%s"), (str(user_id),))
    values = dict(zip(selected, row, strict=True))
    assert values["id"] == str(book_id) and values["owner_user_id"] == str(user_id)
    assert values["co_authors"] == '["A"]' and values["custom_metadata"] == '{"k": 1}'
    assert sql(query.replace("auth.user_id()", "%s"), (str(uuid.uuid4()),)) == []
