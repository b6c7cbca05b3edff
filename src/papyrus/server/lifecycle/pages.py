"""The pages mailed links open when `APP_LINK_BASE_URL` is not set (links then point at this
server): a form that reads the token from the URL's fragment and posts it to the API.

Opening a page changes nothing (mail scanners follow links); only its button does. The script
is inline and allowed by its hash alone; the token never reaches the server in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from papyrus.server.lifecycle.mails import CONFIRM_CHANGE_PATH, RESET_PATH, VERIFY_PATH

_SCRIPT = """
const form = document.getElementById("form"), out = document.getElementById("out");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
if (!token) { out.textContent = "This link is incomplete: open the whole link from the mail."; }
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {token};
  const password = document.getElementById("password");
  if (password) {
    if (password.value !== document.getElementById("again").value) {
      out.textContent = "The two passwords differ."; return;
    }
    body.new_password = password.value;
  }
  form.querySelector("button").disabled = true;
  const response = await fetch(form.dataset.api, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  out.textContent = response.ok ? form.dataset.done
    : (answer.error ? answer.error.message : "Something went wrong; try again later.");
  if (response.ok) { form.hidden = true; history.replaceState(null, "", location.pathname); }
  else { form.querySelector("button").disabled = false; }
});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; "
        "style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_PASSWORD_FIELDS = """
<p><label>New password<br><input id="password" type="password" autocomplete="new-password"
  minlength="8" maxlength="256" required></label></p>
<p><label>Again<br><input id="again" type="password" autocomplete="new-password"
  minlength="8" maxlength="256" required></label></p>
"""

pages_router = APIRouter(include_in_schema=False)


def _page(title: str, api: str, button: str, done: str, fields: str = "") -> HTMLResponse:
    # Relative to /account/<page>, so a PUBLIC_BASE_URL with a path prefix works too.
    attributes = f'data-api="{html.escape(api)}" data-done="{html.escape(done)}"'
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - Papyrus</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto">
<h1>{html.escape(title)}</h1>
<form id="form" {attributes}>{fields}<p><button type="submit">{html.escape(button)}</button></p>
</form>
<p id="out" role="status"></p>
<script>{_SCRIPT}</script>
</body></html>
"""
    return HTMLResponse(body, headers=_HEADERS)


@pages_router.get(VERIFY_PATH)
async def verify_email_page() -> HTMLResponse:
    return _page(
        "Confirm your address",
        "../v1/auth/verify-email",
        "Confirm my address",
        "Your address is confirmed. You can close this page.",
    )


@pages_router.get(RESET_PATH)
async def reset_password_page() -> HTMLResponse:
    return _page(
        "Choose a new password",
        "../v1/auth/password/reset",
        "Set the password",
        "Your password is set and every device was signed out: sign in again in the app.",
        _PASSWORD_FIELDS,
    )


@pages_router.get(CONFIRM_CHANGE_PATH)
async def confirm_email_page() -> HTMLResponse:
    return _page(
        "Confirm your new address",
        "../v1/auth/email/confirm-change",
        "Use this address",
        "The account now uses this address. You can close this page.",
    )
