"""The console session a request's cookie names, looked up once per request."""

from __future__ import annotations

from fastapi import Request

from ..auth import SESSION_COOKIE, service_state
from ..sessions import ConsoleSession

__all__ = ["current_session"]


async def current_session(request: Request) -> ConsoleSession | None:
    """The live console session of the request's cookie, or None (no hashing, one read
    in a worker thread: the sessions live in the service database)."""
    cached: ConsoleSession | None = getattr(request.state, "console_session", None)
    if cached is not None:
        return cached
    token = request.cookies.get(SESSION_COOKIE, "")
    state = service_state(request)
    session = await state.call_service_db(state.sessions.get, token) if token else None
    request.state.console_session = session
    return session
