from fastapi.testclient import TestClient

from tests.conftest import bearer, register


def test_me_returns_the_profile(client: TestClient) -> None:
    body = register(client, email="me@example.com", display_name="Me")
    me = client.get("/v1/users/me", headers=bearer(body["access_token"])).json()
    assert me["id"] == body["user"]["id"]
    assert me["email"] == "me@example.com"
    assert me["display_name"] == "Me"
    assert me["avatar_url"] is None
    assert "password_hash" not in me


def test_patch_me_changes_only_given_fields(client: TestClient, sql) -> None:
    body = register(client, display_name="Before")
    headers = bearer(body["access_token"])
    response = client.patch(
        "/v1/users/me", headers=headers, json={"avatar_url": "https://cdn.example.com/a.png"}
    )
    assert response.status_code == 200
    assert response.json()["display_name"] == "Before"
    assert response.json()["avatar_url"] == "https://cdn.example.com/a.png"

    response = client.patch("/v1/users/me", headers=headers, json={"display_name": "  After "})
    assert response.json()["display_name"] == "After"
    assert response.json()["avatar_url"] == "https://cdn.example.com/a.png"

    response = client.patch("/v1/users/me", headers=headers, json={"avatar_url": None})
    assert response.json()["avatar_url"] is None
    assert sql("SELECT display_name, avatar_url FROM users") == [("After", None)]


def test_patch_me_rejects_bad_values_and_writes_nothing(client: TestClient, sql) -> None:
    body = register(client, display_name="Stable")
    headers = bearer(body["access_token"])
    for payload in (
        {"display_name": ""},
        {"display_name": "x" * 101},
        {"avatar_url": "javascript:alert(1)"},
        {"avatar_url": "https://x/" + "a" * 2048},
        {"email": "new@example.com"},
        {"display_name": 42},
    ):
        response = client.patch("/v1/users/me", headers=headers, json=payload)
        assert response.status_code == 422, payload
        assert response.json()["error"]["code"] == "validation_error"
    assert sql("SELECT display_name, avatar_url FROM users") == [("Stable", None)]
