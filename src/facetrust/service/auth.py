"""Who is calling, and may they: API-key authentication and the role check.

API clients send ``Authorization: Bearer ft_<id>_<secret>``; the console
holds a server-side session instead (:mod:`facetrust.service.sessions`).
Every route depends on :func:`allow` with its operation id, which checks the
role against :data:`~facetrust.service.permissions.PERMISSIONS`.

Invalid keys cost almost nothing: a malformed key or an unknown key id is
refused without argon2, a recently verified key is accepted from memory, and
only a known key id with an unverified secret reaches argon2 (in at most
``HASHING_THREADS`` threads, so the worker threads stay free for real work).
Failed attempts are counted per client address and per key id; past the
limit, unverified keys from that address or for that key id are answered 429
with ``Retry-After`` before any hashing, while already verified keys keep
working. A throttled request is answered after its ``Retry-After`` or
``THROTTLED_DELAY_S``, whichever is shorter (an idle wait, no CPU), so a client
that ignores ``Retry-After`` and retries at once cannot keep the server busy:
40 such clients send at most 20 requests a second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .apikeys import ApiKey, parse_key
from .limits import rate_limited, retry_seconds
from .permissions import PERMISSIONS, permits
from .problems import Problem
from .refusals import note_key
from .state import ServiceState

SESSION_COOKIE = "facetrust_session"

#: Most seconds a throttled authentication waits before its 429 is sent.
THROTTLED_DELAY_S = 2.0

bearer = HTTPBearer(auto_error=False, description="An API key: `ft_<id>_<secret>`.")


def service_state(request: Request) -> ServiceState:
    """The running app's :class:`ServiceState`."""
    state: ServiceState = request.app.state.service
    return state


def client_address(request: Request) -> str:
    """The peer address of ``request`` (the throttle's name for the client)."""
    return request.client.host if request.client else "unknown"


def _unauthorized() -> Problem:
    return Problem(
        "unauthorized",
        "The API key is unknown, revoked or malformed. Ask an admin for a new key.",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _throttled(wait: float, whom: str) -> Problem:
    seconds = retry_seconds(wait)
    return Problem(
        "rate-limited",
        f"Too many failed authentication attempts {whom}. Retry after {seconds} s with a "
        "valid key.",
        headers={"Retry-After": str(seconds)},
        retry_after_s=seconds,
    )


async def _refuse_throttled(state: ServiceState, wait: float, whom: str) -> Problem:
    state.metrics.rate_limited()
    await anyio.sleep(min(wait, THROTTLED_DELAY_S))
    return _throttled(wait, whom)


async def check_key(request: Request, presented: str) -> ApiKey:
    """The active key ``presented`` belongs to; a 401 or 429 problem otherwise.

    The order keeps invalid keys cheap (see the module notes): grammar, then the
    memory of verified keys, then the throttles, then an unknown id, and only
    then argon2.
    """
    state = service_state(request)
    address = client_address(request)
    parsed = parse_key(presented)
    if parsed is not None:
        key = state.keys.cached(*parsed)
        if key is not None:
            return key
    wait = state.address_failures.blocked(address)
    if wait:
        raise await _refuse_throttled(state, wait, "from this address")
    if parsed is None or not state.keys.is_known(parsed[0]):
        state.address_failures.failed(address)
        raise _unauthorized()
    key_id, secret = parsed
    wait = state.key_failures.blocked(key_id)
    if wait:
        raise await _refuse_throttled(state, wait, "for this key")
    key = await anyio.to_thread.run_sync(
        state.keys.verify, key_id, secret, limiter=state.hash_limiter
    )
    if key is None:
        state.address_failures.failed(address)
        state.key_failures.failed(key_id)
        raise _unauthorized()
    return key


async def authenticate(request: Request, presented: str | None) -> ApiKey:
    """The active key ``presented`` belongs to, or a 401 (429 when throttled) problem."""
    if not presented:
        raise Problem(
            "unauthorized",
            "This endpoint needs an API key: send 'Authorization: Bearer ft_<id>_<secret>'. "
            "An admin creates keys with `facetrust keys create --role ROLE`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = await check_key(request, presented)
    note_key(key)
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

    With ``rate_limit``, each call also takes a token from the key's bucket for
    ``operation`` (429 with ``Retry-After`` when empty).
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
            wait = state.identify_bucket.take(f"{operation}:{key.key_id}")
            if wait:
                state.metrics.rate_limited()
                raise rate_limited(wait, operation)
        return key

    dependency.__name__ = f"allow_{operation}"
    return dependency
