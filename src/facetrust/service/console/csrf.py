"""CSRF tokens for console forms: one random token per session, kept server-side."""

from __future__ import annotations

import hmac

from fastapi import Request

from ..problems import Problem
from .request_session import current_session

__all__ = ["check_csrf", "csrf_token"]


def csrf_token(request: Request) -> str:
    """The CSRF token of the request's console session, as :func:`current_session`
    found it ("" when it was not looked up or there is no live session).

    Each login draws a new random token, so two logins (even with one API key)
    never share one, and a token dies with its session.
    """
    session = getattr(request.state, "console_session", None)
    return session.csrf if session is not None else ""


async def check_csrf(request: Request, token: str) -> None:
    """Refuse a form whose CSRF token does not match the request's session.

    Raises
    ------
    Problem
        ``csrf-failed`` when the token is missing, stale or forged.
    """
    await current_session(request)
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(expected, token):
        raise Problem("csrf-failed", "The form is stale or forged. Reload the page and retry.")
