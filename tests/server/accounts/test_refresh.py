import threading

import httpx
from fastapi.testclient import TestClient

from tests.conftest import LiveServer, bearer, register


def _refresh(client, token: str):
    return client.post("/v1/auth/refresh", json={"refresh_token": token})


def test_refresh_rotates_the_token(client: TestClient) -> None:
    first = register(client)
    response = _refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/v1/users/me", headers=bearer(second["access_token"])).status_code == 200
    assert _refresh(client, second["refresh_token"]).status_code == 200


def test_reusing_a_rotated_token_revokes_the_whole_session(client: TestClient, sql) -> None:
    first = register(client)
    second = _refresh(client, first["refresh_token"]).json()
    third = _refresh(client, second["refresh_token"]).json()

    reuse = _refresh(client, first["refresh_token"])
    assert reuse.status_code == 401
    assert reuse.json()["error"]["code"] == "invalid_refresh_token"
    # Every token descended from that login is dead now, access tokens included.
    assert _refresh(client, third["refresh_token"]).status_code == 401
    assert client.get("/v1/users/me", headers=bearer(third["access_token"])).status_code == 401
    assert sql("SELECT revoked_reason FROM auth_sessions") == [("refresh_token_reuse",)]


def test_reuse_in_one_session_leaves_other_sessions_alone(client: TestClient) -> None:
    phone = register(client, email="two@example.com", password="password-123")
    laptop = client.post(
        "/v1/auth/login",
        json={"email": "two@example.com", "password": "password-123", "client_type": "desktop"},
    ).json()
    _refresh(client, phone["refresh_token"])
    assert _refresh(client, phone["refresh_token"]).status_code == 401
    assert _refresh(client, laptop["refresh_token"]).status_code == 200


def test_unknown_expired_and_revoked_tokens_are_401(client: TestClient, sql) -> None:
    assert _refresh(client, "not-a-token").status_code == 401

    expired = register(client)
    sql("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    assert _refresh(client, expired["refresh_token"]).status_code == 401

    revoked = register(client)
    client.post("/v1/auth/logout", headers=bearer(revoked["access_token"]))
    response = _refresh(client, revoked["refresh_token"])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_refresh_token"


def test_concurrent_refreshes_of_one_token_exactly_one_succeeds(app, client: TestClient) -> None:
    token = register(client)["refresh_token"]
    statuses: list[int] = []
    barrier = threading.Barrier(4)

    with LiveServer(app) as server:

        def attempt() -> None:
            with httpx.Client(base_url=server.url) as http:
                barrier.wait()
                statuses.append(_refresh(http, token).status_code)

        threads = [threading.Thread(target=attempt) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted(statuses) == [200, 401, 401, 401]
