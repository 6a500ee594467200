"""Console session pages: log in with an API key, log out, and the home page."""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..auth import SESSION_COOKIE, service_state
from .access import LoginRequired, session_key
from .csrf import check_csrf
from .rendering import render_page

__all__ = ["LOGIN_COOKIE", "router"]

router = APIRouter(include_in_schema=False)

#: Cookie holding the login form's double-submit CSRF token.
LOGIN_COOKIE = "facetrust_login_csrf"


def login_page(request: Request, status: int = 200, **context: Any) -> Response:
    """The login form, with a fresh double-submit token in the form and in a cookie."""
    # Login CSRF: a random token in a SameSite=Strict cookie and in the form (double submit).
    token = secrets.token_urlsafe(32)
    response = render_page(request, None, "login.html", status=status, login_csrf=token,
                           **context)
    response.set_cookie(
        LOGIN_COOKIE, token, path="/console/login", httponly=True, samesite="strict",
        secure=service_state(request).settings.secure_cookies,
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
    key = await anyio.to_thread.run_sync(service_state(request).keys.authenticate, api_key)
    if key is None:
        return login_page(request, status=401, error={
            "title": "Login failed", "detail": "The key is unknown, revoked or malformed."})
    response = RedirectResponse("/console/", status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    response.set_cookie(
        SESSION_COOKIE, api_key.strip(), path="/console", httponly=True, samesite="strict",
        secure=service_state(request).settings.secure_cookies,
    )
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """Drop the session cookie and go back to the login form."""
    check_csrf(request, csrf)
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
