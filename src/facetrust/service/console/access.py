"""Who is logged in to the console, and whether they may open a page."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from ..apikeys import ApiKey
from ..auth import SESSION_COOKIE, service_state
from ..permissions import permits
from ..refusals import note_key
from ..sessions import ConsoleSession
from .rendering import render_page

__all__ = ["LoginRequired", "current_session", "guard", "session_key"]


class LoginRequired(Exception):
    """No live session: the caller should be sent to the login page."""


def current_session(request: Request) -> ConsoleSession | None:
    """The live console session of the request's cookie, or None (no hashing, one read)."""
    cached: ConsoleSession | None = getattr(request.state, "console_session", None)
    if cached is not None:
        return cached
    token = request.cookies.get(SESSION_COOKIE, "")
    session = service_state(request).sessions.get(token) if token else None
    request.state.console_session = session
    return session


async def session_key(request: Request) -> ApiKey:
    """The API key whose console session the request's cookie names.

    Raises
    ------
    LoginRequired
        When there is no cookie, the session has ended (logout, idle, expired),
        or its key has been revoked (the key's sessions then end too).
    """
    session = current_session(request)
    if session is None:
        raise LoginRequired
    state = service_state(request)
    key = state.keys.active(session.key_id)
    if key is None:
        state.sessions.end_all(session.key_id)
        raise LoginRequired
    note_key(key)
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


async def purpose_form(request: Request, operation: str, template: str) -> Response:
    """The page ``template`` with the gallery's purposes, if the session may ``operation``."""
    key = await guard(request, operation)
    if isinstance(key, Response):
        return key
    purposes = service_state(request).gallery.config.purposes
    return render_page(request, key, template, purposes=purposes)
