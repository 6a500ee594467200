"""Who is calling, and may they: API-key authentication and the role check.

API clients send ``Authorization: Bearer ft_<id>_<secret>``; the console
sends the same key from its HttpOnly cookie. Every route depends on
:func:`allow` with its operation id, which checks the role against
:data:`~facetrust.service.permissions.PERMISSIONS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .apikeys import ApiKey
from .limits import rate_limited
from .permissions import PERMISSIONS, permits
from .problems import Problem
from .state import ServiceState

SESSION_COOKIE = "facetrust_session"

bearer = HTTPBearer(auto_error=False, description="An API key: `ft_<id>_<secret>`.")


def service_state(request: Request) -> ServiceState:
    """The running app's :class:`ServiceState`."""
    state: ServiceState = request.app.state.service
    return state


async def authenticate(request: Request, presented: str | None) -> ApiKey:
    """The active key ``presented`` belongs to, or a 401 problem."""
    if not presented:
        raise Problem(
            "unauthorized",
            "This endpoint needs an API key: send 'Authorization: Bearer ft_<id>_<secret>'. "
            "An admin creates keys with `facetrust keys create --role ROLE`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state = service_state(request)
    key = await anyio.to_thread.run_sync(state.keys.authenticate, presented)
    if key is None:
        raise Problem(
            "unauthorized",
            "The API key is unknown, revoked or malformed. Ask an admin for a new key.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return key


def role_refusal(key: ApiKey, operation: str) -> str | None:
    """Why ``key``'s role may not call ``operation`` (a sentence), or None if it may."""
    if permits(key.role, operation):
        return None
    allowed = ", ".join(sorted(r.value for r in PERMISSIONS.get(operation, ())))
    return (
        f"A key of role {key.role.value!r} may not call {operation!r} "
        f"(allowed: {allowed or 'nobody'})."
    )


def check_role(key: ApiKey, operation: str) -> None:
    """Raise a 403 problem unless ``key``'s role may call ``operation``."""
    refusal = role_refusal(key, operation)
    if refusal is not None:
        raise Problem("forbidden", refusal, operation=operation, role=key.role.value)


def allow(operation: str, *, rate_limit: bool = False) -> Callable[..., Awaitable[ApiKey]]:
    """A FastAPI dependency: the caller's key, if its role may call ``operation``.

    With ``rate_limit``, each call also takes a token from the key's bucket
    (429 with ``Retry-After`` when empty).
    """
    if operation not in PERMISSIONS:
        raise KeyError(f"operation {operation!r} is missing from the permission table")

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> ApiKey:
        key = await authenticate(request, credentials.credentials if credentials else None)
        check_role(key, operation)
        if rate_limit:
            state = service_state(request)
            wait = state.identify_bucket.take(key.key_id)
            if wait:
                state.metrics.rate_limited()
                raise rate_limited(wait, operation)
        return key

    dependency.__name__ = f"allow_{operation}"
    return dependency
