"""HTTP routes of the account lifecycle: thin wrappers over `service` and `export`.

Every route counts against the per-source budget of the credential endpoints; routes that
check a password also count failures like a sign-in, and routes that send a link count against
the recipient address's hourly budget. A route that queued mail wakes this process's sender
after its transaction committed.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.responses import StreamingResponse

from papyrus.server.accounts.dependencies import (
    AuthRateLimit,
    CallerDep,
    DbDep,
    LimitsPoolDep,
    SettingsDep,
    client_ip,
)
from papyrus.server.accounts.schemas import TokenResponse
from papyrus.server.accounts.service import AccountDeleted
from papyrus.server.errors import ErrorResponse
from papyrus.server.lifecycle import export, service
from papyrus.server.lifecycle.schemas import (
    ChangeEmailRequest,
    ChangePasswordRequest,
    DeleteAccountRequest,
    EmailStatus,
    ForgotPasswordRequest,
    MailQueued,
    PasswordChanged,
    ResetPasswordRequest,
    TokenRequest,
)
from papyrus.server.mail.outbox import MailSender

_error: dict[str, Any] = {"model": ErrorResponse}
_errors: dict[int | str, dict[str, Any]] = {400: _error, 401: _error, 422: _error, 429: _error}
_proof_errors: dict[int | str, dict[str, Any]] = {403: _error}

router = APIRouter(tags=["account lifecycle"], responses=_errors, dependencies=[AuthRateLimit])


async def get_mail(request: Request) -> MailSender:
    sender: MailSender = request.app.state.mail
    return sender


MailDep = Annotated[MailSender, Depends(get_mail)]


async def _proof(request: Request, caller: CallerDep) -> service.Proof:
    return service.Proof(caller.user_id, caller.session_id, client_ip(request))


ProofDep = Annotated[service.Proof, Depends(_proof)]


@router.post("/auth/verify-email")
async def verify_email(body: TokenRequest, db: DbDep) -> EmailStatus:
    """Confirm the account's address with the token from the mailed link (works once)."""
    user = await service.verify_email(db, body.token)
    return EmailStatus(email=user.email, email_verified=user.email_verified)


@router.post(
    "/auth/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: _error},
)
async def resend_verification(
    caller: CallerDep, db: DbDep, settings: SettingsDep, limits: LimitsPoolDep, mail: MailDep
) -> MailQueued:
    """Mail a new verification link to the signed-in account's address (older links stop
    working)."""
    await service.resend_verification(db, settings, limits, caller.user_id)
    mail.wake()
    return MailQueued(message="A new confirmation link is on its way.")


_FORGOT_ANSWER = MailQueued(
    message="If an account uses this address, a link to reset its password is on its way."
)


@router.post("/auth/password/forgot", status_code=status.HTTP_202_ACCEPTED)
async def forgot_password(
    body: ForgotPasswordRequest,
    db: DbDep,
    settings: SettingsDep,
    mail: MailDep,
) -> MailQueued:
    """Mail a single-use reset link (30 minutes; a newer one voids it). The answer, and the
    work behind it, is the same whether or not an account uses the address."""
    await service.forgot_password(db, settings, body.email)
    mail.wake()  # either way: the wake-up must not tell the two apart either
    return _FORGOT_ANSWER


@router.post("/auth/password/reset")
async def reset_password(
    body: ResetPasswordRequest, db: DbDep, settings: SettingsDep, limits: LimitsPoolDep
) -> TokenResponse:
    """Set a new password with the reset link's token: every session of the account ends, and
    this device is signed in."""
    return await service.reset_password(
        db, settings, limits, body.token, body.new_password, body.client_type, body.device_label
    )


@router.post("/auth/password/change", responses={409: _error, **_proof_errors})
async def change_password(
    body: ChangePasswordRequest,
    proof: ProofDep,
    db: DbDep,
    settings: SettingsDep,
    limits: LimitsPoolDep,
    mail: MailDep,
) -> PasswordChanged:
    """Change the password: this session stays signed in, every other one ends."""
    revoked = await service.change_password(
        db, settings, limits, proof, body.current_password, body.new_password
    )
    mail.wake()
    return PasswordChanged(sessions_revoked=revoked)


@router.post(
    "/users/me/email",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: _error, **_proof_errors},
)
async def change_email(
    body: ChangeEmailRequest,
    proof: ProofDep,
    db: DbDep,
    settings: SettingsDep,
    limits: LimitsPoolDep,
    mail: MailDep,
) -> MailQueued:
    """Ask to change the address: a link goes to the new one, and the change happens when it
    is opened. Needs the password, or a Google sign-in of this session within minutes."""
    await service.change_email(db, settings, limits, proof, body.new_email, body.password)
    mail.wake()
    return MailQueued(message=f"A confirmation link is on its way to {body.new_email}.")


@router.post("/auth/email/confirm-change", responses={409: _error})
async def confirm_email_change(
    body: TokenRequest, db: DbDep, settings: SettingsDep, mail: MailDep
) -> EmailStatus:
    """Make the new address the account's, with the token mailed to it; the old address is
    told."""
    user = await service.confirm_email_change(db, settings, body.token)
    mail.wake()
    return EmailStatus(email=user.email, email_verified=user.email_verified)


@router.delete("/users/me", status_code=status.HTTP_204_NO_CONTENT, responses={**_proof_errors})
async def delete_account(
    proof: ProofDep,
    db: DbDep,
    settings: SettingsDep,
    limits: LimitsPoolDep,
    body: DeleteAccountRequest | None = Body(default=None),
) -> Response:
    """Delete the account and everything of it (profile, identities, sessions, every synced
    row). Needs the password in the body, or a Google sign-in of this session within minutes.
    Other devices are signed out (`account_deleted`) and sync removes their copy."""
    password = body.password if body is not None else None
    await service.delete_account(db, settings, limits, proof, password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/users/me/export",
    response_class=StreamingResponse,
    responses={200: {"model": export.ExportDocument, "description": "The account's data."}},
)
async def export_account(request: Request, caller: CallerDep) -> StreamingResponse:
    """Everything the server holds about the account as one JSON document: profile,
    identities, sessions, sign-in sources and failures, pending links and mail, rejections,
    staged uploads, deleted row ids and every synced row."""
    state = request.app.state
    document = export.spool()
    try:
        async with state.export_slots:
            await export.write_export(state.engine, caller.user_id, document)
        size = document.tell()
    except LookupError:
        document.close()
        raise AccountDeleted() from None
    except BaseException:
        document.close()
        raise
    stamp = date.today().isoformat()
    return StreamingResponse(
        export.chunks(document),
        media_type="application/json",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="papyrus-export-{stamp}.json"',
            "Cache-Control": "no-store",
        },
    )
