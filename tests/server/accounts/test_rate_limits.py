import httpx
import pytest
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from tests.conftest import LiveServer, make_settings, register


@pytest.fixture
def limited_app(tmp_path, database_url):
    settings = make_settings(
        tmp_path,
        database_url,
        RATE_LIMIT_AUTH_IP_PER_MINUTE=5,
        RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL=3,
    )
    return create_app(settings)


def test_ip_limit_answers_429_with_retry_after(limited_app) -> None:
    with TestClient(limited_app) as client:
        statuses = [
            client.post("/v1/auth/refresh", json={"refresh_token": "nope"}).status_code
            for _ in range(5)
        ]
        assert statuses == [401] * 5
        limited = client.post(
            "/v1/auth/login", json={"email": "a@b.co", "password": "x", "client_type": "cli"}
        )
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"]["code"] == "rate_limited"


def test_ip_limit_is_shared_across_server_processes(limited_app, tmp_path, database_url) -> None:
    """Two app instances (as two workers would be) share one budget through PostgreSQL."""
    other = create_app(make_settings(tmp_path, database_url, RATE_LIMIT_AUTH_IP_PER_MINUTE=5))
    with LiveServer(limited_app) as first, LiveServer(other) as second:
        statuses = []
        for i in range(6):
            url = (first if i % 2 else second).url
            response = httpx.post(f"{url}/v1/auth/refresh", json={"refresh_token": "nope"})
            statuses.append(response.status_code)
    assert statuses == [401] * 5 + [429]


def test_ip_limit_is_per_ip(limited_app) -> None:
    with TestClient(limited_app, client=("10.0.0.1", 1000)) as a:
        for _ in range(6):
            a.post("/v1/auth/refresh", json={"refresh_token": "nope"})
        assert a.post("/v1/auth/refresh", json={"refresh_token": "nope"}).status_code == 429
    with TestClient(limited_app, client=("10.0.0.2", 1000)) as b:
        assert b.post("/v1/auth/refresh", json={"refresh_token": "nope"}).status_code == 401


def test_failed_logins_per_email_lock_that_email_only(tmp_path, database_url, sql) -> None:
    app = create_app(make_settings(tmp_path, database_url, RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL=3))
    with TestClient(app) as client:
        register(client, email="victim@example.com", password="password-123")
        register(client, email="other@example.com", password="password-123")

        def login(email: str, password: str):
            return client.post(
                "/v1/auth/login", json={"email": email, "password": password, "client_type": "cli"}
            )

        assert [login("victim@example.com", "wrong-pass").status_code for _ in range(3)] == [
            401
        ] * 3
        locked = login("VICTIM@example.com", "password-123")
        assert locked.status_code == 429
        assert int(locked.headers["Retry-After"]) > 800
        assert login("other@example.com", "password-123").status_code == 200
        # The lock expires with the window.
        sql("UPDATE login_failures SET failed_at = failed_at - interval '16 minutes'")
        assert login("victim@example.com", "password-123").status_code == 200


def test_unknown_emails_are_limited_too(tmp_path, database_url) -> None:
    app = create_app(make_settings(tmp_path, database_url, RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL=2))
    with TestClient(app) as client:
        body = {"email": "ghost@example.com", "password": "guess-1234", "client_type": "cli"}
        statuses = [client.post("/v1/auth/login", json=body).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
