"""Console session pages: log in with an API key, log out, and the home page.

Logging in checks the key exactly as the API does (cheap refusals, the same
failure throttles per client address and key id, 429 with ``Retry-After``)
and opens a server-side session (:mod:`facetrust.service.sessions`); the
cookie holds only the session's random token. Log-ins, refused log-ins and
log-outs are audited (``console.login``, ``console.login_refused``,
``console.logout``); refused ones collapse per minute like other anonymous
refusals.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..auth import SESSION_COOKIE, check_key, service_state
from ..problems import Problem
from ..sessions import ConsoleSession
from ..state import to_the_end
from .access import LoginRequired, session_key
from .csrf import check_csrf
from .rendering import PREFIX, render_page
from .request_session import current_session

__all__ = ["LOGIN_COOKIE", "router", "secure_cookies"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

#: Cookie holding the login form's double-submit CSRF token.
LOGIN_COOKIE = "facetrust_login_csrf"


def secure_cookies(request: Request) -> bool:
    """Whether the console's cookies are ``Secure``: when ``secure_cookies`` is set, and
    whenever the request came over HTTPS (directly, or through a TLS proxy whose
    ``X-Forwarded-Proto`` uvicorn trusts), so a forgotten setting cannot let a
    session cookie later travel over plain HTTP."""
    return service_state(request).settings.secure_cookies or request.url.scheme == "https"


def login_page(request: Request, status: int = 200, **context: Any) -> Response:
    """The login form, with a fresh double-submit token in the form and in a cookie."""
    # Login CSRF: a random token in a SameSite=Strict cookie and in the form (double submit).
    token = secrets.token_urlsafe(32)
    response = render_page(request, None, "login.html", status=status, login_csrf=token,
                           **context)
    response.set_cookie(
        LOGIN_COOKIE, token, path="/console/login", httponly=True, samesite="strict",
        secure=secure_cookies(request),
    )
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    """Show the login form."""
    return login_page(request)


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)],
    login_csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Check the key and the login token; on success set the session cookie."""
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, login_csrf):
        return login_page(request, status=403, error={
            "title": "Login form expired", "detail": "Reload the login page and try again."})
    state = service_state(request)
    try:
        key = await check_key(request, api_key)
    except Problem as refused:
        status, problem = refused.problem.status, refused.problem.uri
        if state.floods.admit("anonymous", "/console/login", status, problem):
            await state.record("console.login_refused", actor="anonymous",
                               status=status, problem=problem)
        response = login_page(request, status=refused.problem.status, error={
            "title": "Login failed" if refused.problem.status == 401 else "Too many attempts",
            "detail": "The key is unknown, revoked or malformed."
            if refused.problem.status == 401 else refused.detail})
        response.headers.update(refused.headers)
        return response

    replaced = await current_session(request)

    async def open_and_record() -> tuple[str, ConsoleSession]:
        if replaced is not None:  # a new log-in in the same browser ends the one before
            ended = await state.call_service_db(
                state.sessions.end, request.cookies.get(SESSION_COOKIE, "")
            )
            if ended is not None:
                await state.record_change("console.logout", actor=f"key:{replaced.key_id}",
                                          reason="replaced by a new log-in")
        token, session = await state.call_service_db(state.sessions.open, key.key_id)
        await state.record_change("console.login", actor=key.actor,
                                  session_expires_at=session.expires_at)
        return token, session

    token, session = await to_the_end(open_and_record())
    response = RedirectResponse("/console/", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    response.set_cookie(
        SESSION_COOKIE, token, path="/console", httponly=True, samesite="strict",
        secure=secure_cookies(request),  # no max_age: the cookie ends with the browser
    )
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session (server-side), drop its cookie and go back to the login form."""
    await check_csrf(request, csrf)
    state = service_state(request)
    session = await current_session(request)

    async def end_and_record() -> None:
        ended = await state.call_service_db(
            state.sessions.end, request.cookies.get(SESSION_COOKIE, "")
        )
        if session is not None and ended is not None:
            await state.record_change("console.logout", actor=f"key:{session.key_id}")

    await to_the_end(end_and_record())
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """The home page: the menu of pages the key's role may use."""
    try:
        key = await session_key(request)
    except LoginRequired:
        return RedirectResponse("/console/login", status_code=303)
    return render_page(request, key, "home.html")
