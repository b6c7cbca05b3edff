"""The documentation matches the code: OpenAPI models and the settings reference."""

import re
from pathlib import Path

from fastapi.testclient import TestClient

from papyrus.server.config import Settings

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
