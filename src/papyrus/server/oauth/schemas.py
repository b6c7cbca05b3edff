"""Request and response models for the OAuth endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from papyrus.server.accounts.schemas import ClientInfo, StrictModel
from papyrus.server.text import check_storable

OneTimeCode = Annotated[str, Field(min_length=1, max_length=256)]
RedirectUri = Annotated[str, Field(min_length=1, max_length=2048), AfterValidator(check_storable)]
# RFC 7636 4.1: 43-128 unreserved characters. A malformed verifier can match no challenge, so it is
# refused as a validation error before the code is looked at.
CodeVerifier = Annotated[
    str,
    Field(
        min_length=43,
        max_length=128,
        pattern=r"^[A-Za-z0-9._~-]+$",
        description="PKCE verifier (RFC 7636) for a code started with a code_challenge.",
    ),
]
# Checked by the service rather than here, so a malformed one is a 400 like every other start
# error (and the browser start route can answer it with its error page).
CodeChallenge = Annotated[
    str,
    Field(description="PKCE S256 challenge: BASE64URL(SHA256(code_verifier)), 43 characters."),
    AfterValidator(check_storable),
]
CodeChallengeMethod = Annotated[
    str, Field(description='Only "S256".'), AfterValidator(check_storable)
]


class ExchangeCodeRequest(ClientInfo):
    code: OneTimeCode
    code_verifier: CodeVerifier | None = None


class LinkStartRequest(StrictModel):
    redirect_uri: RedirectUri
    code_challenge: CodeChallenge | None = None
    code_challenge_method: CodeChallengeMethod | None = None


class LinkStartResponse(BaseModel):
    authorization_url: str


class LinkCompleteRequest(StrictModel):
    code: OneTimeCode
    code_verifier: CodeVerifier | None = None
