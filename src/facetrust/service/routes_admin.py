"""Admin routes (API keys, retention sweep), the policy every role reads, and ``/v1/me``.

Creating and revoking a key is audited (``apikey.create``, ``apikey.revoke``,
with the admin's key as actor); revoking also ends the key's console sessions.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from ..gallery.checks import DEFAULT_TEXT_LIMIT
from .apikeys import ApiKey, CreatedKey, Role
from .auth import allow, service_state
from .inputs import text_bound, text_schema
from .permissions import operations_of
from .policy import published_policy
from .problems import AUTH_PROBLEMS, problem_responses
from .state import ServiceState, to_the_end

router = APIRouter(
    prefix="/v1", tags=["admin"], responses={**AUTH_PROBLEMS, **problem_responses(409)}
)


class NewKey(BaseModel):
    role: Role
    name: str = Field(min_length=1, max_length=text_bound(DEFAULT_TEXT_LIMIT),
                      json_schema_extra=text_schema(DEFAULT_TEXT_LIMIT),
                      description="Who or what uses the key.")


async def create_audited_key(
    state: ServiceState, admin: ApiKey, role: Role | str, name: str
) -> CreatedKey:
    """Create a key for ``admin`` and audit it (``apikey.create``; never the secret),
    both to the end even if the request times out meanwhile.

    One way to make a key, the CLI's (:meth:`ApiKeys.create`), in a thread of
    the service database's pool, with the gallery's audit log as its hook: the
    event is written before the key is stored, so a key never works without it.
    """
    create = functools.partial(
        state.keys.create, role, name, created_by=admin.actor, audit=state.append_change
    )
    return await to_the_end(state.call_service_db(create))


async def revoke_audited_key(state: ServiceState, admin: ApiKey, key_id: str) -> ApiKey:
    """Revoke ``key_id``, end its console sessions, and audit it (``apikey.revoke``),
    all to the end even if the request times out meanwhile."""

    async def revoke_and_record() -> ApiKey:
        revoked = await state.call_service_db(state.keys.revoke, key_id)
        ended = await state.call_service_db(state.sessions.end_all, key_id)
        await state.record_change("apikey.revoke", actor=admin.actor, key_id=key_id,
                                  role=revoked.role.value, console_sessions_ended=ended)
        return revoked

    return await to_the_end(revoke_and_record())


@router.get("/me", operation_id="whoami")
async def whoami(key: ApiKey = Depends(allow("whoami"))) -> dict[str, Any]:  # noqa: B008
    """The calling key and the operations its role may call."""
    return {**key.to_dict(), "operations": operations_of(key.role)}


@router.get("/policy", operation_id="get_policy")
async def get_policy(
    request: Request, key: ApiKey = Depends(allow("get_policy"))  # noqa: B008
) -> dict[str, Any]:
    """The gallery's policy (purposes, retention, review quorum, operating point) and the
    service's limits: the policy the ``policy.changed`` audit event records."""
    state = service_state(request)
    return published_policy(state.gallery, state.settings)


@router.post("/keys", operation_id="create_api_key", status_code=201)
async def create_key(
    body: NewKey, request: Request, key: ApiKey = Depends(allow("create_api_key"))  # noqa: B008
) -> dict[str, Any]:
    """Create a key; the response's ``key`` is shown this once and stored only hashed."""
    created = await create_audited_key(service_state(request), key, body.role, body.name)
    return created.to_dict()


@router.get("/keys", operation_id="list_api_keys")
async def list_keys(
    request: Request, key: ApiKey = Depends(allow("list_api_keys"))  # noqa: B008
) -> dict[str, Any]:
    """Every key (never a secret), revoked ones included."""
    state = service_state(request)
    keys = await state.call_service_db(state.keys.list)
    return {"keys": [k.to_dict() for k in keys]}


@router.delete("/keys/{key_id}", operation_id="revoke_api_key")
async def revoke_key(
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
    request: Request,
    key: ApiKey = Depends(allow("revoke_api_key")),  # noqa: B008
) -> dict[str, Any]:
    """Revoke a key; it stops working on its next request, and its console sessions end."""
    return (await revoke_audited_key(service_state(request), key, key_id)).to_dict()


@router.post("/retention/sweep", operation_id="sweep_retention")
async def sweep(
    request: Request, key: ApiKey = Depends(allow("sweep_retention"))  # noqa: B008
) -> dict[str, Any]:
    """Purge subjects past retention or without active consent (audited)."""
    state = service_state(request)
    result = await state.use_biometrics(
        key, "sweep_retention", lambda g: g.sweep_retention(actor=key.actor)
    )
    return result.to_dict()
