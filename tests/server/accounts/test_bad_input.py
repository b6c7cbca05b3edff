"""Bad input of every kind: a clear 4xx in the one error shape, and nothing written."""

import pytest
from fastapi.testclient import TestClient

VALID = {
    "email": "bad-input@example.com",
    "password": "password-123",
    "display_name": "Bad Input",
    "client_type": "cli",
}


def _assert_error_shape(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "change",
    [
        {"email": None},
        {"password": None},
        {"display_name": None},
        {"client_type": None},
        {"email": "not-an-email"},
        {"email": 12},
        {"email": "a" * 250 + "@example.com"},
        {"password": "short"},
        {"password": "x" * 257},
        {"password": ["password-123"]},
        {"display_name": ""},
        {"display_name": "   "},
        {"display_name": "n" * 101},
        {"client_type": "toaster"},
        {"device_label": "d" * 256},
        {"unexpected": "field"},
    ],
    ids=repr,
)
def test_register_rejects_bad_fields(client: TestClient, sql, change: dict) -> None:
    body = {k: v for k, v in {**VALID, **change}.items() if v is not None}
    response = client.post("/v1/auth/register", json=body)
    _assert_error_shape(response, 422, "validation_error")
    assert response.json()["error"]["details"]
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_validation_errors_never_echo_the_password(client: TestClient) -> None:
    response = client.post("/v1/auth/register", json={**VALID, "password": "x" * 257})
    assert "x" * 257 not in response.text
    response = client.post("/v1/auth/register", json={**VALID, "email": "secret-password"})
    assert "password-123" not in response.text


def test_malformed_json_is_400(client: TestClient, sql) -> None:
    response = client.post(
        "/v1/auth/register",
        content=b'{"email": "a@b.co", "password":',
        headers={"Content-Type": "application/json"},
    )
    _assert_error_shape(response, 400, "invalid_json")
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_body_that_is_not_an_object_is_422(client: TestClient) -> None:
    for payload in ([VALID], "string", 42, None):
        response = client.post("/v1/auth/register", json=payload)
        assert response.status_code == 422, payload
        assert response.json()["error"]["code"] == "validation_error"


def test_wrong_content_type_is_415(client: TestClient, sql) -> None:
    response = client.post(
        "/v1/auth/register",
        content="email=a@b.co&password=password-123",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _assert_error_shape(response, 415, "unsupported_media_type")
    response = client.post("/v1/auth/login", content=b'{"email":"a@b.co"}')  # no content type
    _assert_error_shape(response, 415, "unsupported_media_type")
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_unknown_route_and_wrong_method_use_the_error_shape(client: TestClient) -> None:
    _assert_error_shape(client.get("/v1/nothing-here"), 404, "not_found")
    _assert_error_shape(client.get("/v1/auth/login"), 405, "method_not_allowed")


def test_bad_path_parameter_is_422(client: TestClient) -> None:
    from tests.conftest import bearer, register

    token = register(client)["access_token"]
    response = client.delete("/v1/auth/sessions/not-a-uuid", headers=bearer(token))
    _assert_error_shape(response, 422, "validation_error")


def test_unexpected_errors_are_a_bare_500(app, settings) -> None:
    from fastapi.testclient import TestClient

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    _assert_error_shape(response, 500, "internal_error")
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text
