from fastapi.testclient import TestClient

from papyrus.server import migrate


def test_health_answers_while_process_is_up(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_reports_migrations_at_head(client: TestClient) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert set(response.json()["migrations"]) == migrate.head_revisions()


def test_ready_fails_when_schema_is_behind(client: TestClient, sql) -> None:
    sql("UPDATE alembic_version SET version_num = 'stale'")
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
