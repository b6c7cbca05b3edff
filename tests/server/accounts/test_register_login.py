import jwt
from fastapi.testclient import TestClient

from papyrus.server.accounts import passwords
from tests.conftest import bearer, register


def test_register_returns_tokens_and_user(client: TestClient, sql) -> None:
    body = register(
        client, email="  Ada@Example.COM ", display_name=" Ada ", device_label="Pixel 9"
    )
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["user"]["email"] == "ada@example.com"
    assert body["user"]["display_name"] == "Ada"
    assert len(body["refresh_token"]) >= 43  # 256 bits, base64url
    [(client_type, label)] = sql("SELECT client_type, device_label FROM auth_sessions")
    assert (client_type, label) == ("cli", "Pixel 9")


def test_password_is_stored_as_argon2id(client: TestClient, sql) -> None:
    register(client, email="hash@example.com", password="s3cret-password")
    [(password_hash,)] = sql("SELECT password_hash FROM users")
    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert "s3cret-password" not in password_hash


def test_refresh_token_is_stored_only_as_hash(client: TestClient, sql) -> None:
    body = register(client)
    rows = sql("SELECT token_hash FROM refresh_tokens")
    assert len(rows) == 1
    assert body["refresh_token"].encode() not in bytes(rows[0][0])
    assert len(bytes(rows[0][0])) == 32


def test_register_existing_email_is_409_case_insensitive(client: TestClient, sql) -> None:
    register(client, email="dup@example.com")
    response = client.post(
        "/v1/auth/register",
        json={
            "email": "DUP@example.com",
            "password": "another password",
            "display_name": "Dup",
            "client_type": "web",
        },
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"
    assert sql("SELECT count(*) FROM users") == [(1,)]
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]


def test_login_succeeds_with_normalised_email(client: TestClient) -> None:
    register(client, email="login@example.com", password="password-123")
    response = client.post(
        "/v1/auth/login",
        json={"email": " LOGIN@example.com", "password": "password-123", "client_type": "desktop"},
    )
    assert response.status_code == 200
    me = client.get("/v1/users/me", headers=bearer(response.json()["access_token"]))
    assert me.json()["email"] == "login@example.com"


def test_login_failures_look_the_same_for_unknown_email_and_wrong_password(
    client: TestClient,
) -> None:
    register(client, email="known@example.com", password="password-123")
    wrong_password = client.post(
        "/v1/auth/login",
        json={"email": "known@example.com", "password": "wrong-pass", "client_type": "cli"},
    )
    unknown_email = client.post(
        "/v1/auth/login",
        json={"email": "nobody@example.com", "password": "wrong-pass", "client_type": "cli"},
    )
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert wrong_password.json() == unknown_email.json()
    assert wrong_password.json()["error"]["code"] == "invalid_credentials"


def test_unknown_email_costs_one_argon2_verification_too(
    client: TestClient, sql, monkeypatch
) -> None:
    """An unknown email must not answer faster: both paths verify once against a hash with
    the same parameters (counted, not timed, so the check is exact on any machine)."""
    register(client, email="timing@example.com", password="password-123")
    [(stored,)] = sql("SELECT password_hash FROM users")
    verified: list[str] = []
    real = passwords._hasher

    class CountingHasher:
        def verify(self, hash_: str, password: str) -> bool:
            verified.append(hash_)
            return real.verify(hash_, password)

    monkeypatch.setattr(passwords, "_hasher", CountingHasher())
    for email in ("timing@example.com", "ghost@example.com"):
        response = client.post(
            "/v1/auth/login",
            json={"email": email, "password": "wrong-pass", "client_type": "cli"},
        )
        assert response.status_code == 401
    known, unknown = verified
    assert known == stored
    assert unknown != stored
    assert unknown.rsplit("$", 2)[0] == stored.rsplit("$", 2)[0]  # same algorithm and cost


def test_access_token_carries_user_and_session(client: TestClient, settings, sql) -> None:
    body = register(client)
    claims = jwt.decode(
        body["access_token"],
        settings.access_token_secret,
        algorithms=["HS256"],
        audience="papyrus-api",
    )
    [(session_id,)] = sql("SELECT id::text FROM auth_sessions")
    assert claims["sub"] == body["user"]["id"]
    assert claims["sid"] == session_id
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 900
