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


# The TestClient's peer is this proxy; X-Forwarded-For names the client behind it.
PROXY = ("10.0.0.9", 4000)
ATTACKER, VICTIM = "203.0.113.66", "198.51.100.7"


@pytest.fixture
def behind_proxy(tmp_path, database_url):
    """A server that trusts the proxy's forwarding, with small login limits."""
    settings = make_settings(
        tmp_path,
        database_url,
        FORWARDED_ALLOW_IPS=[PROXY[0]],
        RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE=3,
        RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL=6,
    )
    with TestClient(create_app(settings), client=PROXY) as client:
        yield client


def _login(client, source: str, email: str, password: str):
    return client.post(
        "/v1/auth/login",
        json={"email": email, "password": password, "client_type": "cli"},
        headers={"X-Forwarded-For": source},
    )


def test_a_guessing_source_locks_itself_out_not_the_victim(behind_proxy, sql) -> None:
    client = behind_proxy
    register(client, email="victim@example.com", password="password-123")
    register(client, email="other@example.com", password="password-123")
    guesses = [_login(client, ATTACKER, "victim@example.com", "wrong-pass") for _ in range(3)]
    assert [r.status_code for r in guesses] == [401] * 3
    # The attacking source is refused even with the right password (it was guessing) ...
    locked = _login(client, ATTACKER, "VICTIM@example.com", "password-123")
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "rate_limited"
    assert int(locked.headers["Retry-After"]) > 800
    # ... but the owner, from a source that has not been failing, signs in, and the
    # attacker's count is not wiped by the owner's success.
    assert _login(client, VICTIM, "victim@example.com", "password-123").status_code == 200
    assert _login(client, ATTACKER, "victim@example.com", "password-123").status_code == 429
    assert _login(client, ATTACKER, "other@example.com", "password-123").status_code == 200
    # The lock expires with the window.
    sql("UPDATE login_failures SET failed_at = failed_at - interval '16 minutes'")
    assert _login(client, ATTACKER, "victim@example.com", "password-123").status_code == 200


def test_guessing_from_many_sources_is_bounded_per_email(behind_proxy) -> None:
    client = behind_proxy
    register(client, email="target@example.com", password="password-123")
    # The owner signed in from their usual address before the attack.
    assert _login(client, VICTIM, "target@example.com", "password-123").status_code == 200
    sources = [f"192.0.2.{i}" for i in range(1, 7)]
    statuses = [_login(client, s, "target@example.com", "guess-1234").status_code for s in sources]
    assert statuses == [401] * 6  # six sources, each under its own limit of 3
    # Six failures for the address: every further unknown source is refused, guess or not.
    fresh = _login(client, "192.0.2.200", "target@example.com", "password-123")
    assert fresh.status_code == 429
    assert _login(client, "192.0.2.201", "target@example.com", "guess-1234").status_code == 429
    # The owner's known source still gets in.
    assert _login(client, VICTIM, "target@example.com", "password-123").status_code == 200


def test_a_source_that_stopped_failing_is_not_held_by_others(behind_proxy) -> None:
    """Per source: one source's failures never count against another's budget."""
    client = behind_proxy
    register(client, email="shared@example.com", password="password-123")
    for source in ("192.0.2.10", "192.0.2.11"):
        assert _login(client, source, "shared@example.com", "nope-nope").status_code == 401
        assert _login(client, source, "shared@example.com", "nope-nope").status_code == 401
    assert _login(client, "192.0.2.10", "shared@example.com", "password-123").status_code == 200


def test_unknown_emails_are_limited_too(behind_proxy) -> None:
    statuses = [
        _login(behind_proxy, ATTACKER, "ghost@example.com", "guess-1234").status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


def test_spoofed_forwarding_from_an_untrusted_peer_changes_nothing(tmp_path, database_url):
    """Without FORWARDED_ALLOW_IPS the peer is the source, whatever X-Forwarded-For says."""
    settings = make_settings(
        tmp_path,
        database_url,
        RATE_LIMIT_AUTH_IP_PER_MINUTE=5,
        RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE=3,
    )
    with TestClient(create_app(settings), client=PROXY) as client:
        register(client, email="spoof@example.com", password="password-123")
        statuses = [
            _login(client, f"198.18.0.{i}", "spoof@example.com", "wrong-pass").status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]  # one source: the peer
        # The per-IP budget too: 1 register + 4 logins + this one is the sixth request.
        refresh = client.post(
            "/v1/auth/refresh",
            json={"refresh_token": "nope"},
            headers={"X-Forwarded-For": "198.18.0.99"},
        )
        assert refresh.status_code == 429


def test_trusted_forwarding_gives_each_client_its_own_ip_budget(tmp_path, database_url):
    settings = make_settings(
        tmp_path, database_url, RATE_LIMIT_AUTH_IP_PER_MINUTE=2, FORWARDED_ALLOW_IPS=[PROXY[0]]
    )
    with TestClient(create_app(settings), client=PROXY) as client:

        def refresh(source: str) -> int:
            return client.post(
                "/v1/auth/refresh",
                json={"refresh_token": "nope"},
                headers={"X-Forwarded-For": source},
            ).status_code

        assert [refresh("198.18.0.1") for _ in range(3)] == [401, 401, 429]
        assert refresh("198.18.0.2") == 401
        # The proxy's own requests (no header) have their own budget as well.
        assert client.post("/v1/auth/refresh", json={"refresh_token": "n"}).status_code == 401


def test_ipv6_sources_are_counted_per_64(tmp_path, database_url):
    """One host can use a whole /64; rotating inside it does not buy more guesses."""
    settings = make_settings(
        tmp_path,
        database_url,
        FORWARDED_ALLOW_IPS=[PROXY[0]],
        RATE_LIMIT_LOGIN_FAILURES_PER_SOURCE=2,
    )
    with TestClient(create_app(settings), client=PROXY) as client:
        statuses = [
            _login(client, f"2001:db8:1:2::{i:x}", "v6@example.com", "guess-1234").status_code
            for i in range(1, 4)
        ]
        assert statuses == [401, 401, 429]
        assert _login(client, "2001:db8:1:3::1", "v6@example.com", "guess-1234").status_code == 401
