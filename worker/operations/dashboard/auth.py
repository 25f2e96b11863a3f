"""Who may use the dashboard: the address rule, HTTP basic auth, and a CSRF token on every POST."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from typing import Final

CSRF_COOKIE: Final = "dashboard_csrf"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "X-CSRF-Token"
REALM: Final = 'Basic realm="worker dashboard", charset="UTF-8"'


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); a name that resolves
    elsewhere, or an address of any other interface, is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, has_password: bool) -> str | None:
    """Why the dashboard must not listen on `host`, or None: off loopback it needs a password."""
    if has_password or is_loopback(host):
        return None
    return (
        f"refusing to listen on {host} without DASHBOARD_PASSWORD: set it (HTTP basic auth as "
        "DASHBOARD_USER), or listen on 127.0.0.1 and reach it through a tunnel"
    )


def credentials_match(header: str | None, user: str, password: str) -> bool:
    """True if an `Authorization: Basic ...` header carries exactly `user` and `password`.

    Both are compared in constant time, and both always, so a wrong user name takes as long
    to refuse as a wrong password.
    """
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given_user, _, given_password = base64.b64decode(encoded, validate=True).partition(b":")
    except (binascii.Error, ValueError):
        return False
    user_ok = secrets.compare_digest(given_user, user.encode())
    password_ok = secrets.compare_digest(given_password, password.encode())
    return user_ok and password_ok


class CsrfTokens:
    """Double-submit tokens: a random nonce signed with a secret of this process.

    The token goes in a cookie and in each form (or the `X-CSRF-Token` header); a POST is
    accepted only when both are there, equal, and signed here. Another site can make a
    browser send the cookie, but cannot read it to put it in the form, and cannot forge one.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new token."""
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, token: str | None) -> bool:
        """True if `token` was issued by this process."""
        nonce, _, signature = (token or "").partition(".")
        return bool(nonce) and secrets.compare_digest(signature, self._sign(nonce))

    def accepts(self, cookie: str | None, submitted: str | None) -> bool:
        """True if a POST with this cookie and this submitted token may go ahead."""
        if not cookie or not submitted:
            return False
        return secrets.compare_digest(cookie, submitted) and self.valid(cookie)
