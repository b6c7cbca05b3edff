"""Request and response models for accounts and sessions."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from papyrus.server.text import check_storable


class ClientType(StrEnum):
    mobile = "mobile"
    desktop = "desktop"
    web = "web"
    cli = "cli"


def _normalise_email(value: str) -> str:
    return value.strip().lower()


# Every stored string passes `check_storable` (no NUL, no unpaired surrogates).
Email = Annotated[
    EmailStr,
    Field(max_length=254),
    AfterValidator(check_storable),
    AfterValidator(_normalise_email),
]
# Capped before hashing: Argon2 would happily chew megabytes. Hashed, never stored as text.
Password = Annotated[str, Field(min_length=8, max_length=256)]
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(check_storable),
]
DeviceLabel = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=255), AfterValidator(check_storable)
]
AvatarUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=r"^https?://\S+$"),
    AfterValidator(check_storable),
]


class StrictModel(BaseModel):
    """Request bodies: unknown fields refused, and no coercion (`0` is not `false`, `1` is not
    `"1"`), so a confused client hears about it instead of getting a guess."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ClientInfo(StrictModel):
    # JSON has no enum type: the value is matched by its string (nothing else is coerced).
    client_type: Annotated[ClientType, Field(strict=False)]
    device_label: DeviceLabel | None = None


class RegisterRequest(ClientInfo):
    email: Email
    password: Password
    display_name: DisplayName


class LoginRequest(ClientInfo):
    email: Email
    # No minimum here: a short guess is simply a wrong password, not a malformed request.
    password: Annotated[str, Field(min_length=1, max_length=256)]


class RefreshRequest(StrictModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class LogoutRequest(StrictModel):
    all_devices: bool = False


class UserUpdate(StrictModel):
    display_name: DisplayName | None = None
    avatar_url: AvatarUrl | None = None


class LinkedIdentity(BaseModel):
    provider: str
    email: str | None
    linked_at: datetime


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    email_verified: bool
    # False for an account that signs in with Google only (a reset link can set a first one).
    has_password: bool
    display_name: str
    avatar_url: str | None
    created_at: datetime
    identities: list[LinkedIdentity] = []


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: UserPublic


class SessionPublic(BaseModel):
    id: uuid.UUID
    client_type: ClientType
    device_label: str | None
    created_at: datetime
    last_seen_at: datetime
    current: bool
