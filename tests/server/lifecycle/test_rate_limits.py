"""Every lifecycle route counts against the per-source budget of the credential endpoints
(`RATE_LIMIT_AUTH_IP_PER_MINUTE`), whatever it answers: a source over it gets 429 with
`Retry-After`, and other sources do not notice. The routes come from the router itself, so a
route added later is covered without a change here."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from papyrus.server.app import create_app
from papyrus.server.lifecycle.router import router
from tests.conftest import make_settings

ROUTES = sorted(
    (method, route.path)
    for route in router.routes
    if isinstance(route, APIRoute)
    for method in route.methods
)


def test_the_routes_are_the_lifecycle_ones() -> None:
    assert len(ROUTES) >= 9
    assert ("DELETE", "/users/me") in ROUTES and ("POST", "/auth/password/forgot") in ROUTES


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_each_route_is_limited_per_source(
    tmp_path: Path, database_url: str, method: str, path: str
) -> None:
    settings = make_settings(tmp_path, database_url, RATE_LIMIT_AUTH_IP_PER_MINUTE=2)
    app = create_app(settings)
    body = None if method == "GET" else {}
    with TestClient(app) as client:
        # Unsigned-in, empty requests: refused (401, 422) but counted all the same.
        answers = [client.request(method, f"/v1{path}", json=body) for _ in range(3)]
        with TestClient(app, client=("203.0.113.9", 50000)) as elsewhere:
            other = elsewhere.request(method, f"/v1{path}", json=body)
    assert [a.status_code != 429 for a in answers] == [True, True, False], [
        (a.status_code, a.text) for a in answers
    ]
    limited = answers[2]
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) > 0
    assert other.status_code != 429, other.text
