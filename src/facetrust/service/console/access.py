"""Who is logged in to the console, and whether they may open a page."""

from __future__ import annotations

import anyio.to_thread
from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from ..apikeys import ApiKey
from ..auth import SESSION_COOKIE, service_state
from ..permissions import permits
from .rendering import render_page

__all__ = ["LoginRequired", "guard", "session_key"]


class LoginRequired(Exception):
    """No valid session cookie: the caller should be sent to the login page."""


async def session_key(request: Request) -> ApiKey:
    """The API key held in the request's session cookie.

    Raises
    ------
    LoginRequired
        When there is no cookie, or its key is unknown or revoked.
    """
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginRequired
    state = service_state(request)
    key = await anyio.to_thread.run_sync(state.keys.authenticate, cookie)
    if key is None:
        raise LoginRequired
    return key


async def guard(request: Request, operation: str) -> ApiKey | Response:
    """The session's key if it may use ``operation``; else a login redirect or a 403 page."""
    try:
        key = await session_key(request)
    except LoginRequired:
        return RedirectResponse("/console/login", status_code=303)
    if not permits(key.role, operation):
        return render_page(request, key, "forbidden.html", status=403, operation=operation)
    return key
