"""One id per request: the ``X-Request-Id`` header, answered and audited.

A client may send its own ``X-Request-Id`` (1 to 128 letters, digits, ``.``,
``_``, ``-`` or ``:``, e.g. a UUID); anything else is replaced by a random
id. Every response carries the id in ``X-Request-Id``, and every audit event
the request causes records it as ``request_id``
(:func:`facetrust.audit.request_context`), so a support ticket, a client log
line and an audit event can be matched.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..audit import request_context
from .problems import SERVICE_PROBLEMS, problem_response

REQUEST_ID_HEADER = "X-Request-Id"

_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(presented: str | None) -> str:
    """``presented`` if it is a well-formed request id, else a new random one."""
    if presented is not None and _WELL_FORMED.fullmatch(presented):
        return presented
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Give each HTTP request an id: in ``scope["state"]``, the audit context and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                presented = value.decode("latin-1")
                break
        request_id = request_id_of(presented)
        scope.setdefault("state", {})["request_id"] = request_id

        started = False

        async def tagged(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with request_context(request_id):
            try:
                await self.app(scope, receive, tagged)
            except Exception:
                # The app's last-resort handler answers outside every middleware, so
                # without this a 500 would be the one answer without the id. It still
                # logs the error; it sees the response started and sends nothing more.
                if not started:
                    response = problem_response(
                        SERVICE_PROBLEMS["internal-error"],
                        f"The service failed unexpectedly (request id {request_id}); the "
                        "error is in the server log.",
                        instance=scope.get("path"),
                    )
                    await response(scope, receive, tagged)
                raise
