"""The documentation matches the code: OpenAPI models and the settings reference."""

import re
import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from papyrus import contract
from papyrus.server.config import Settings
from tests.conftest import bearer, register

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_in_env_example() -> None:
    documented = set(
        re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M)
    )
    missing = set(Settings.model_fields) - documented
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"


def test_openapi_describes_every_endpoint_with_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert client.get("/docs").status_code == 200
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            body = operation.get("requestBody")
            if body is not None:
                schema = body["content"]["application/json"]["schema"]
                assert "$ref" in schema or "anyOf" in schema, where
            successes = {k: v for k, v in operation["responses"].items() if k[0] in "23"}
            assert successes, where
            for status, response in successes.items():
                if status in ("204", "302", "303", "307"):
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert schema, where
            errors = [k for k in operation["responses"] if k.startswith(("4", "5"))]
            for status in errors:
                content = operation["responses"][status].get("content", {})
                ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
                assert ref.endswith("ErrorResponse"), (where, status)


def test_the_published_upload_schema_describes_every_synced_table(client: TestClient) -> None:
    """Generated clients and fuzzers read the upload body from the OpenAPI document: it names
    every declared table, accepts membership ids, and what it accepts the server applies."""
    spec = client.get("/openapi.json").json()
    entry = spec["components"]["schemas"]["CrudEntry"]
    assert entry["properties"]["type"]["enum"] == [table.name for table in contract.TABLES]
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/UploadRequest", "components": spec["components"]},
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    book, shelf = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [
        {"op": "PUT", "type": "books", "id": book, "data": {"title": "Dune"}, "op_id": 1},
        {"op": "PUT", "type": "shelves", "id": shelf, "data": {"name": "Sci-fi"}, "op_id": 2},
        {
            "op": "PUT",
            "type": "book_shelves",
            "id": f"{book}:{shelf}",
            "data": {"book_id": book, "shelf_id": shelf},
            "op_id": 3,
        },
    ]
    assert [e.message for e in validator.iter_errors({"batch": batch})] == []
    token = register(client)["access_token"]
    response = client.post(
        "/v1/sync/powersync-upload", json={"batch": batch}, headers=bearer(token)
    )
    assert response.json() == {"status": "applied", "applied": 3}

    membership = batch[2]
    for wrong in ({"type": "users"}, {"id": f"{book}:"}, {"id": f"{book}:{shelf}:{book}"}):
        assert not validator.is_valid({"batch": [{**membership, **wrong}]}), wrong
