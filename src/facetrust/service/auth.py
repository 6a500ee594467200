"""Who is calling, and may they: API-key authentication and the role check.

API clients send ``Authorization: Bearer ft_<id>_<secret>``; the console
holds a server-side session instead (:mod:`facetrust.service.sessions`).
Every route depends on :func:`allow` with its operation id, which checks the
role against :data:`~facetrust.service.permissions.PERMISSIONS`.

Invalid keys cost almost nothing: a malformed key or an unknown key id is
refused without argon2, a recently verified key is accepted from memory, and
only a known key id with an unverified secret reaches argon2 (in at most
``HASHING_THREADS`` threads, so the worker threads stay free for real work).
Failed attempts are counted per client address: every unverified key takes a
failure token from its address's bucket *before* it is looked up or hashed
(one atomic step, so concurrent attempts cannot all pass one check), and a
key whose secret verifies gives its token back. Requests that present the same
key not yet verified at the same time (clients that start together, a replica
restarted under load) wait for one check instead of each taking a token and
running argon2. With no token left, unverified
keys from that address are answered 429 with ``Retry-After``, while already
verified keys keep working. Failures are not counted per key id: key ids are
not secret, and such a count would let anyone keep a key's owner out (the
arithmetic is in docs/service.md, "Checking a key cheaply"). A throttled
request is answered after its ``Retry-After`` or ``THROTTLED_DELAY_S``,
whichever is shorter (an idle wait, no CPU), so a client that ignores
``Retry-After`` and retries at once cannot keep the server busy: 40 such
clients send at most 20 requests a second.

Every read and write of the service database here (keys, throttles, rate
limits) runs in a worker thread of the service database's own small pool
(:meth:`ServiceState.call_service_db`), never on the event loop, as do the
console's session look-ups: while that database is slow or unreachable, the
requests that need it wait (and are answered 503 after the request timeout),
every other request, ``/healthz`` first, is still answered, and the
gallery's work keeps its threads.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ApiKeyRowInvalid
from .apikeys import ApiKey, parse_key
from .limits import rate_limited, retry_seconds
from .metrics import route_of
from .offload import in_worker_thread
from .permissions import PERMISSIONS, permits
from .problems import Problem, note_problem, problem_response
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


def _no_key() -> Problem:
    return Problem(
        "unauthorized",
        "This endpoint needs an API key: send 'Authorization: Bearer ft_<id>_<secret>'. "
        "An admin creates keys with `facetrust keys create --role ROLE`.",
        headers={"WWW-Authenticate": "Bearer"},
    )


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


#: Takes a token from a key's bucket: 0.0 if allowed, else seconds until one is available.
Spend = Callable[[ApiKey], float]


@dataclass(frozen=True)
class _Throttled:
    wait: float
    whom: str


def _remembered_key(
    state: ServiceState, parsed: tuple[str, str], spend: Spend | None
) -> tuple[ApiKey, float] | None:
    """The key if its secret verified recently (no argon2; a store read: in a thread)."""
    key = state.keys.cached(*parsed)
    if key is None:
        return None
    return key, spend(key) if spend is not None else 0.0


def _unverified_key(
    state: ServiceState, address: str, parsed: tuple[str, str] | None
) -> _Throttled | Literal["unknown", "hash"]:
    """What :func:`check_key` can decide about a key not remembered, without argon2.

    It takes its address's failure token here; ``"hash"`` hands it on to
    :func:`_verified_key`, which gives it back if the secret verifies.
    """
    wait = state.address_failures.reserve(address)
    if wait:
        return _Throttled(wait, "from this address")
    if parsed is None or not state.keys.is_known(parsed[0]):
        return "unknown"  # a failure: the token stays spent
    return "hash"


def _verified_key(
    state: ServiceState, address: str, key_id: str, secret: str, spend: Spend | None
) -> tuple[ApiKey, float] | None:
    """The key if ``secret`` verifies (argon2), its address's failure token given back;
    None (the token stays spent) if not. Runs to its end even if the request is
    cancelled meanwhile."""
    key = state.keys.verify(key_id, secret)
    if key is None:
        return None
    state.address_failures.give_back(address)
    return key, spend(key) if spend is not None else 0.0


async def check_key(request: Request, presented: str) -> ApiKey:
    """The active key ``presented`` belongs to; a 401 or 429 problem otherwise."""
    key, _ = await _check_key(request, presented, None)
    return key


async def _check_key(
    request: Request, presented: str, spend: Spend | None
) -> tuple[ApiKey, float]:
    """The key and, with ``spend``, the wait its bucket asks (see :func:`check_key`).

    A key whose row does not fit its seal is refused like an unknown key (the
    client learns nothing more), and audited (:func:`audit_invalid_row`).
    """
    try:
        return await _look_up_key(request, presented, spend)
    except ApiKeyRowInvalid as invalid:
        await audit_invalid_row(request, invalid)
        raise _unauthorized() from None


async def audit_invalid_row(request: Request, invalid: ApiKeyRowInvalid) -> None:
    """Audit a key refused because its row's seal is missing or wrong (``apikey.refused``,
    with the key id and the problem, for the auditor; never told to the client).

    Bounded like the other anonymous refusals: the first few of a minute per
    route and problem in full, the rest counted (``service.refused.repeated``).
    """
    state = service_state(request)
    route = route_of(request.scope)
    if state.floods.admit("anonymous", route, 401, invalid.problem):
        await state.record("apikey.refused", actor="anonymous", key_id=invalid.key_id,
                           problem=invalid.problem, route=route, status=401)


async def _look_up_key(
    request: Request, presented: str, spend: Spend | None
) -> tuple[ApiKey, float]:
    """:func:`_check_key` before an invalid row is audited.

    The order keeps invalid keys cheap (see the module notes): grammar, then the
    memory of verified keys, then the address's failure token, then an unknown
    id, and only then argon2. The store reads and writes run in worker threads (module
    notes); ``spend`` runs in the same thread once the key is known.
    """
    state = service_state(request)
    address = client_address(request)
    parsed = parse_key(presented)
    if parsed is None:
        return await _answer(state, await _check_unverified(state, address, None, spend))
    presented_digest = hashlib.sha256(presented.encode()).digest()
    while True:
        found = await state.call_service_db(_remembered_key, state, parsed, spend)
        if found is not None:
            return found
        # The same key's first check may be in progress (clients that start together,
        # a replica that restarts under load): wait for it rather than take a failure
        # token and run argon2 again. If it verified, the key is remembered now.
        flight = state.verifications.get(presented_digest)
        if flight is None:
            break
        await asyncio.shield(flight)
    flight = asyncio.get_running_loop().create_future()
    state.verifications[presented_digest] = flight
    try:
        outcome = await _check_unverified(state, address, parsed, spend)
    finally:  # before a refusal's wait: those waiting on this check go on at once
        del state.verifications[presented_digest]
        flight.set_result(None)
    return await _answer(state, outcome)


async def _check_unverified(
    state: ServiceState, address: str, parsed: tuple[str, str] | None, spend: Spend | None
) -> tuple[ApiKey, float] | _Throttled | None:
    """:func:`_check_key` for a key not remembered: the failure token, then argon2.
    None: refused (unknown id, malformed or wrong secret)."""
    found = await state.call_service_db(_unverified_key, state, address, parsed)
    if isinstance(found, _Throttled):
        return found
    if found == "unknown":
        return None
    assert parsed is not None  # "hash" is only answered for a well-formed key
    return await in_worker_thread(
        _verified_key, state, address, *parsed, spend, limiter=state.hash_limiter
    )


async def _answer(
    state: ServiceState, outcome: tuple[ApiKey, float] | _Throttled | None
) -> tuple[ApiKey, float]:
    if isinstance(outcome, _Throttled):
        raise await _refuse_throttled(state, outcome.wait, outcome.whom)
    if outcome is None:
        raise _unauthorized()
    return outcome


async def authenticate(
    request: Request, presented: str | None, spend: Spend | None = None
) -> tuple[ApiKey, float]:
    """The active key ``presented`` belongs to, or a 401 (429 when throttled) problem.

    With ``spend`` (a rate limit), also the seconds its bucket asks to wait (0.0: none).
    """
    if not presented:
        raise _no_key()
    key, wait = await _check_key(request, presented, spend)
    note_key(key)
    return key, wait


async def spend_token(state: ServiceState, operation: str, key: ApiKey) -> Problem | None:
    """Take a token from ``key``'s bucket for ``operation`` (the API's bucket; the
    buckets may live in the service database): None if allowed, else the 429
    problem to show (counted in the metrics). For the console's forms, which
    authenticate without :func:`allow`."""
    wait = await state.call_service_db(state.identify_bucket.take, _bucket(operation, key))
    if not wait:
        return None
    state.metrics.rate_limited()
    return rate_limited(wait, operation)


def _bucket(operation: str, key: ApiKey) -> str:
    return f"{operation}:{key.key_id}"


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


#: The operations that run the face model on uploaded photos: each call takes a
#: token from the key's bucket for the operation (API and console alike), so none
#: is free to repeat.
MODEL_OPERATIONS = frozenset({"identify", "verify_subject", "verify_photos", "enroll_photo"})


def allow(operation: str) -> Callable[..., Awaitable[ApiKey]]:
    """A FastAPI dependency: the caller's key, if its role may call ``operation``.

    For the :data:`MODEL_OPERATIONS`, each call also takes a token from the key's
    bucket for ``operation`` (429 with ``Retry-After`` when empty).
    """
    if operation not in PERMISSIONS:
        raise KeyError(f"operation {operation!r} is missing from the permission table")
    rate_limit = operation in MODEL_OPERATIONS

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> ApiKey:
        state = service_state(request)

        def spend(key: ApiKey) -> float:
            # a key whose role may not call the operation spends nothing (403 below)
            if not permits(key.role, operation):
                return 0.0
            return state.identify_bucket.take(_bucket(operation, key))

        key, wait = await authenticate(
            request, credentials.credentials if credentials else None,
            spend if rate_limit else None,
        )
        check_role(key, operation)
        if wait:
            state.metrics.rate_limited()
            raise rate_limited(wait, operation)
        return key

    dependency.__name__ = f"allow_{operation}"
    return dependency


class KeyBeforeBody:
    """ASGI middleware: a write to the API (``POST``, ``PUT``, ``PATCH``, ``DELETE``
    under ``/v1/``) without an API key, or with one that is not even well formed,
    is refused before its body is read.

    Every such route needs a key, but the framework reads (and parses) a form or
    JSON body before the key is checked: without this, anyone could make the
    service read and parse up to the body cap for nothing. The answers are those
    the routes give (401, or 429 once the address's failure budget is spent, a
    malformed key taking a failure token as it does there), and the refusal
    audit, outside this middleware, records them for biometric routes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE")
            or not str(scope.get("path", "")).startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        try:
            if scheme.lower() != "bearer" or not token:
                raise _no_key()
            if parse_key(token) is None:
                state = service_state(request)
                await _answer(state, await _check_unverified(
                    state, client_address(request), None, None))
        except Problem as refused:
            note_problem(request, refused.problem.slug)
            response = problem_response(
                refused.problem, refused.detail, instance=request.url.path,
                headers={**refused.headers, "Connection": "close"},  # the body is unread
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
