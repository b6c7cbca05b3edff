"""Request and response models of the lifecycle endpoints (strict, like every request body)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from papyrus.server.accounts.schemas import ClientType, DeviceLabel, Email, Password, StrictModel

# What `secrets.token_urlsafe` makes: anything else cannot be a link's token.
LinkToken = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")]
# A password being checked, not set: no minimum (a short one is simply wrong).
CurrentPassword = Annotated[str, Field(min_length=1, max_length=256)]


class TokenRequest(StrictModel):
    token: LinkToken


class ForgotPasswordRequest(StrictModel):
    email: Email


class ResetPasswordRequest(StrictModel):
    token: LinkToken
    new_password: Password
    # The device that resets the password is signed in (a browser page, unless it says).
    client_type: Annotated[ClientType, Field(strict=False)] = ClientType.web
    device_label: DeviceLabel | None = None


class ChangePasswordRequest(StrictModel):
    current_password: CurrentPassword
    new_password: Password


class ChangeEmailRequest(StrictModel):
    new_email: Email
    # Or a recent Google sign-in of this session.
    password: CurrentPassword | None = None


class DeleteAccountRequest(StrictModel):
    # Or a recent Google sign-in of this session.
    password: CurrentPassword | None = None


class MailQueued(BaseModel):
    status: Literal["queued"] = "queued"
    message: str


class EmailStatus(BaseModel):
    email: str
    email_verified: bool


class PasswordChanged(BaseModel):
    sessions_revoked: int
