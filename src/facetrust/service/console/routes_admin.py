"""Admin page: list, create and revoke API keys, and run the retention sweep."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from ...errors import FacetrustError
from ...gallery.checks import DEFAULT_TEXT_LIMIT
from ..apikeys import Role
from ..auth import service_state
from ..inputs import text_bound
from ..problems import problem_of
from ..routes_admin import create_audited_key, revoke_audited_key
from .access import guard
from .csrf import check_csrf
from .rendering import PREFIX, error_context, render_page

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/keys")
async def keys_page(request: Request) -> Response:
    """List the API keys, with the form to create one."""
    key = await guard(request, "list_api_keys")
    if isinstance(key, Response):
        return key
    state = service_state(request)
    keys = await state.call_service_db(state.keys.list)
    return render_page(request, key, "keys.html", keys=keys, roles=[r.value for r in Role])


@router.post("/keys")
async def keys_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    action: Annotated[str, Form()],
    role: Annotated[str, Form()] = "",
    name: Annotated[str, Form(max_length=text_bound(DEFAULT_TEXT_LIMIT))] = "",
    key_id: Annotated[str, Form(max_length=64)] = "",
    confirm: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Create or revoke a key, or sweep retention; each action needs its own permission.

    Revoking asks first: without ``confirm=yes`` the page shows the key and asks
    again (a form, so it works without JavaScript).
    """
    operation = {"create": "create_api_key", "revoke": "revoke_api_key",
                 "sweep": "sweep_retention"}.get(action, "create_api_key")
    key = await guard(request, operation)
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    state = service_state(request)
    context: dict[str, Any] = {}
    status = 200
    try:
        if action == "create":
            context["created"] = await create_audited_key(state, key, role, name)
        elif action == "revoke" and confirm != "yes":
            record = await state.call_service_db(state.keys.active, key_id)
            if record is not None:
                context["confirm_revoke"] = record
            else:  # unknown or already revoked: the revoke call says so
                context["revoked"] = await revoke_audited_key(state, key, key_id)
        elif action == "revoke":
            context["revoked"] = await revoke_audited_key(state, key, key_id)
        elif action == "sweep":
            context["sweep"] = await state.use_biometrics(
                key, "sweep_retention", lambda g: g.sweep_retention(actor=key.actor)
            )
    except FacetrustError as error:
        context["error"], status = error_context(error), problem_of(error).status
    keys = await state.call_service_db(state.keys.list)
    return render_page(request, key, "keys.html", status=status, keys=keys,
                       roles=[r.value for r in Role], **context)
