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


# Text PostgreSQL cannot store: NUL, and an unpaired surrogate (sent as the JSON escape \ud800,
# which is valid JSON). Both must be a 422 before the database sees them, never a 500.
_UNSTORABLE = ["nul\u0000here", "\\ud800"]


def _json_with(body: dict, field: str, bad: str) -> bytes:
    """Raw JSON carrying `bad` in `field`; the surrogate escape is written as-is."""
    import json

    marker = "@@BAD@@"
    raw = json.dumps({**body, field: marker})
    return raw.replace(marker, bad.replace("\u0000", "\\u0000")).encode()


def _post_raw(client: TestClient, path: str, raw: bytes, method: str = "POST", **headers: str):
    return client.request(
        method, path, content=raw, headers={"content-type": "application/json", **headers}
    )


@pytest.mark.parametrize("bad", _UNSTORABLE, ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("field", ["display_name", "device_label", "email"])
def test_register_refuses_text_postgres_cannot_store(
    client: TestClient, sql, field: str, bad: str
) -> None:
    body = {**VALID, "device_label": "laptop"}
    response = _post_raw(client, "/v1/auth/register", _json_with(body, field, bad))
    _assert_error_shape(response, 422, "validation_error")
    assert sql("SELECT count(*) FROM users") == [(0,)]


@pytest.mark.parametrize("bad", _UNSTORABLE, ids=["nul", "lone-surrogate"])
def test_every_stored_text_field_refuses_unstorable_text(client: TestClient, sql, bad) -> None:
    from tests.conftest import bearer, register

    tokens = register(client, email="stored@example.com", password="password-123")
    auth = bearer(tokens["access_token"])
    login = {"email": "stored@example.com", "password": "password-123", "client_type": "cli"}
    cases = [
        ("PATCH", "/v1/users/me", {}, "display_name", auth),
        ("PATCH", "/v1/users/me", {}, "avatar_url", auth),
        ("POST", "/v1/auth/login", login, "device_label", {}),
        ("POST", "/v1/auth/exchange-code", {"code": "c", "client_type": "cli"}, "device_label", {}),
    ]
    for method, path, body, field, headers in cases:
        value = "https://example.com/" + bad if field == "avatar_url" else bad
        response = _post_raw(client, path, _json_with(body, field, value), method, **headers)
        _assert_error_shape(response, 422, "validation_error")
        assert [d["loc"] for d in response.json()["error"]["details"]] == [["body", field]], path
    assert sql("SELECT display_name, avatar_url FROM users") == [("Reader", None)]
    assert sql("SELECT count(*) FROM auth_sessions") == [(1,)]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/auth/logout", {"all_devices": 0}),
        ("/v1/auth/logout", {"all_devices": "true"}),
        ("/v1/auth/refresh", {"refresh_token": 12345678}),
        ("/v1/auth/login", {"email": "a@b.co", "password": 12345678, "client_type": "cli"}),
        ("/v1/auth/register", {**VALID, "display_name": 7}),
        ("/v1/auth/register", {**VALID, "client_type": 1}),
        ("/v1/auth/exchange-code", {"code": 1, "client_type": "cli"}),
    ],
    ids=repr,
)
def test_request_bodies_are_strictly_typed(client: TestClient, sql, path: str, body) -> None:
    """No coercion: `0` is not `false`, a number is not a string."""
    from tests.conftest import bearer, register

    token = register(client)["access_token"]
    response = client.post(path, json=body, headers=bearer(token))
    _assert_error_shape(response, 422, "validation_error")
    assert sql("SELECT count(*) FROM auth_sessions WHERE revoked_at IS NULL") == [(1,)]


def test_options_and_405_name_every_method_of_the_path(client: TestClient) -> None:
    options = client.options("/v1/users/me")
    assert options.status_code == 204
    assert options.headers["allow"] == "DELETE, GET, OPTIONS, PATCH"
    wrong = client.put("/v1/users/me", json={})
    _assert_error_shape(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "DELETE, GET, PATCH"
    sessions = client.options("/v1/auth/sessions/00000000-0000-0000-0000-000000000000")
    assert sessions.headers["allow"] == "DELETE, OPTIONS"
    _assert_error_shape(client.options("/v1/nothing-here"), 404, "not_found")
