"""Request and response models for the OAuth endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from papyrus.server.accounts.schemas import ClientInfo, StrictModel

OneTimeCode = Annotated[str, Field(min_length=1, max_length=256)]
RedirectUri = Annotated[str, Field(min_length=1, max_length=2048)]


class ExchangeCodeRequest(ClientInfo):
    code: OneTimeCode


class LinkStartRequest(StrictModel):
    redirect_uri: RedirectUri


class LinkStartResponse(BaseModel):
    authorization_url: str


class LinkCompleteRequest(StrictModel):
    code: OneTimeCode
