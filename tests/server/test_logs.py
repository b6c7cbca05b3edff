import logging

from fastapi.testclient import TestClient

from papyrus.server.logs import RedactQueryStrings


def test_access_log_lines_lose_their_query_string(client: TestClient) -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/auth/oauth/google/callback?code=SECRET&state=S", "1.1", 302),
        None,
    )
    assert RedactQueryStrings().filter(record)
    line = record.getMessage()
    assert "SECRET" not in line
    assert "/v1/auth/oauth/google/callback?[redacted]" in line
    # The app installs the filter on uvicorn's access logger.
    assert any(
        isinstance(f, RedactQueryStrings) for f in logging.getLogger("uvicorn.access").filters
    )
