import uuid

from fastapi.testclient import TestClient

from tests.conftest import bearer, register


def _login(client: TestClient, email: str, client_type: str, label: str | None = None) -> dict:
    body = {"email": email, "password": "password-123", "client_type": client_type}
    if label is not None:
        body["device_label"] = label
    response = client.post("/v1/auth/login", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_sessions_list_shows_each_device(client: TestClient) -> None:
    phone = register(client, email="s@example.com", password="password-123", client_type="mobile")
    laptop = _login(client, "s@example.com", "desktop", "Work laptop")
    sessions = client.get("/v1/auth/sessions", headers=bearer(laptop["access_token"])).json()
    assert [(s["client_type"], s["device_label"], s["current"]) for s in sessions] == [
        ("mobile", None, False),
        ("desktop", "Work laptop", True),
    ]
    assert all(s["created_at"] and s["last_seen_at"] for s in sessions)
    assert phone["access_token"] != laptop["access_token"]


def test_revoked_session_rejects_its_unexpired_access_token(client: TestClient) -> None:
    phone = register(client, email="r@example.com", password="password-123")
    laptop = _login(client, "r@example.com", "desktop")
    sessions = client.get("/v1/auth/sessions", headers=bearer(laptop["access_token"])).json()
    phone_id = next(s["id"] for s in sessions if not s["current"])

    response = client.delete(
        f"/v1/auth/sessions/{phone_id}", headers=bearer(laptop["access_token"])
    )
    assert response.status_code == 204
    denied = client.get("/v1/users/me", headers=bearer(phone["access_token"]))
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "session_revoked"
    assert client.get("/v1/users/me", headers=bearer(laptop["access_token"])).status_code == 200


def test_cannot_revoke_someone_elses_session(client: TestClient, sql) -> None:
    alice = register(client)
    bob = register(client)
    [(bob_session,)] = sql(
        "SELECT s.id::text FROM auth_sessions s JOIN users u ON u.id = s.user_id WHERE u.id = %s",
        (bob["user"]["id"],),
    )
    response = client.delete(
        f"/v1/auth/sessions/{bob_session}", headers=bearer(alice["access_token"])
    )
    assert response.status_code == 404
    assert client.get("/v1/users/me", headers=bearer(bob["access_token"])).status_code == 200
    unknown = client.delete(
        f"/v1/auth/sessions/{uuid.uuid4()}", headers=bearer(alice["access_token"])
    )
    assert unknown.status_code == 404


def test_logout_ends_only_this_session(client: TestClient) -> None:
    phone = register(client, email="l@example.com", password="password-123")
    laptop = _login(client, "l@example.com", "desktop")
    assert client.post("/v1/auth/logout", headers=bearer(phone["access_token"])).status_code == 204
    assert client.get("/v1/users/me", headers=bearer(phone["access_token"])).status_code == 401
    assert client.get("/v1/users/me", headers=bearer(laptop["access_token"])).status_code == 200


def test_logout_all_devices_flag_and_logout_all_endpoint(client: TestClient) -> None:
    for endpoint, body in (
        ("/v1/auth/logout", {"all_devices": True}),
        ("/v1/auth/logout-all", None),
    ):
        email = f"{uuid.uuid4().hex[:6]}@example.com"
        phone = register(client, email=email, password="password-123")
        laptop = _login(client, email, "desktop")
        response = client.post(endpoint, headers=bearer(phone["access_token"]), json=body)
        assert response.status_code == 204, endpoint
        for tokens in (phone, laptop):
            assert (
                client.get("/v1/users/me", headers=bearer(tokens["access_token"])).status_code
                == 401
            )
            refreshed = client.post(
                "/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
            assert refreshed.status_code == 401


def test_endpoints_need_a_bearer_token(client: TestClient) -> None:
    for method, path in (
        ("GET", "/v1/users/me"),
        ("PATCH", "/v1/users/me"),
        ("GET", "/v1/auth/sessions"),
        ("POST", "/v1/auth/logout"),
        ("POST", "/v1/auth/logout-all"),
    ):
        response = client.request(method, path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_forged_and_expired_access_tokens_are_rejected(client: TestClient, settings) -> None:
    import time

    import jwt

    body = register(client)
    claims = jwt.decode(
        body["access_token"],
        settings.access_token_secret,
        algorithms=["HS256"],
        audience="papyrus-api",
    )
    forged = jwt.encode(claims, "not-the-secret-but-just-as-long-as-one", algorithm="HS256")
    expired = jwt.encode(
        {**claims, "iat": int(time.time()) - 1000, "exp": int(time.time()) - 10},
        settings.access_token_secret,
        algorithm="HS256",
    )
    wrong_type = jwt.encode({**claims, "type": "powersync"}, settings.access_token_secret, "HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token, code in (
        (forged, "invalid_token"),
        (expired, "token_expired"),
        (wrong_type, "invalid_token"),
        (unsigned, "invalid_token"),
        ("garbage", "invalid_token"),
    ):
        response = client.get("/v1/users/me", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code
