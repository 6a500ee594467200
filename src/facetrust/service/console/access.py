"""Who is logged in to the console, and whether they may open a page."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from ...errors import ApiKeyRowInvalid
from ..apikeys import ApiKey
from ..auth import audit_invalid_row, service_state
from ..permissions import permits
from ..problems import SERVICE_PROBLEMS
from ..refusals import note_key
from .rendering import PROBLEM_TYPE_HEADER, render_page
from .request_session import current_session

__all__ = ["LoginRequired", "forbidden_page", "guard", "session_key"]


class LoginRequired(Exception):
    """No live session: the caller should be sent to the login page."""


async def session_key(request: Request) -> ApiKey:
    """The API key whose console session the request's cookie names.

    Raises
    ------
    LoginRequired
        When there is no cookie, the session has ended (logout, idle, expired),
        or its key has been revoked or its row no longer fits its seal (the
        key's sessions then end too).
    """
    session = await current_session(request)
    if session is None:
        raise LoginRequired
    state = service_state(request)
    try:
        key = await state.call_service_db(state.keys.active, session.key_id)
    except ApiKeyRowInvalid as invalid:  # the key's row was changed since the log-in
        await audit_invalid_row(request, invalid)
        key = None
    if key is None:
        await state.call_service_db(state.sessions.end_all, session.key_id)
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
        return forbidden_page(request, key, operation)
    return key


def forbidden_page(request: Request, key: ApiKey, operation: str) -> Response:
    """The 403 page for a role that may not use ``operation`` (its refusal is audited
    as ``forbidden``, like the API's)."""
    response = render_page(request, key, "forbidden.html", status=403, operation=operation)
    response.headers[PROBLEM_TYPE_HEADER] = SERVICE_PROBLEMS["forbidden"].uri
    return response


async def purpose_form(request: Request, operation: str, template: str) -> Response:
    """The page ``template`` with the gallery's purposes, if the session may ``operation``."""
    key = await guard(request, operation)
    if isinstance(key, Response):
        return key
    purposes = service_state(request).gallery.config.purposes
    return render_page(request, key, template, purposes=purposes)
