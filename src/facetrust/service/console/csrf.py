"""CSRF tokens for console forms, bound to the session cookie."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from ..auth import SESSION_COOKIE, service_state
from ..problems import Problem

__all__ = ["check_csrf", "csrf_token"]


def csrf_token(request: Request, session: str) -> str:
    """The CSRF token for forms shown to the holder of ``session``.

    Parameters
    ----------
    request : Request
        The request being answered; gives the service's CSRF secret.
    session : str
        The session cookie's value (the API key).

    Returns
    -------
    str
        A hex HMAC of the session under the service's secret; the session itself
        cannot be read back from it.
    """
    secret = service_state(request).csrf_secret
    return hmac.new(secret, b"csrf:" + hashlib.sha256(session.encode()).digest(),
                    hashlib.sha256).hexdigest()


def check_csrf(request: Request, token: str) -> None:
    """Refuse a form whose CSRF token does not match the request's session.

    Raises
    ------
    Problem
        ``csrf-failed`` when the token is missing, stale or forged.
    """
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not hmac.compare_digest(csrf_token(request, cookie), token):
        raise Problem("csrf-failed", "The form is stale or forged. Reload the page and retry.")
