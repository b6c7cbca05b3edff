"""The upload tests' readers, reused: goal progress is computed from uploaded rows."""

from tests.server.sync.conftest import alice, bob  # noqa: F401
