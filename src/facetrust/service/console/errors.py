"""Error pages of the console: every error on a ``/console`` path is HTML in the layout.

The API under ``/v1`` answers errors as problem+json; a person using the
console gets the page they were on instead, with a plain-English message that
says what to do next. A form that did not validate (no purpose ticked, a
number that is not one) comes back with what was typed; a form whose CSRF
token does not match comes back empty (the request is not trusted) with the
same status the API would answer.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...errors import FacetrustError
from ..apikeys import Role
from ..auth import service_state
from ..permissions import permits
from ..problems import (
    PROBLEM_MEDIA_TYPE,
    SERVICE_PROBLEMS,
    Problem,
    log_unexpected,
    note_problem,
    problem_of,
)
from .access import LoginRequired, forbidden_page, session_key
from .rendering import LABELS, render_page
from .routes_enrolment import enrol_context
from .routes_session import login_page

__all__ = ["FORM_PAGES", "ConsoleErrorPages", "install_error_pages", "validation_message"]


Handler = Callable[[Request, Any], Awaitable[Response]]

#: Console form paths: (template, operation the page needs).
FORM_PAGES: Mapping[str, tuple[str, str]] = {
    "/console/consent": ("consent.html", "grant_consent"),
    "/console/enrol": ("enrol.html", "enroll_photo"),
    "/console/verify": ("verify.html", "verify_photos"),
    "/console/identify": ("identify.html", "identify"),
    "/console/keys": ("keys.html", "list_api_keys"),
}


def _field_message(item: Mapping[str, Any]) -> str:
    loc = [str(part) for part in item.get("loc", ()) if part not in ("body", "query")]
    name = loc[0] if loc else "form"
    label = LABELS.get(name, name.replace("_", " ").capitalize())
    kind, ctx = str(item.get("type", "")), item.get("ctx") or {}
    if kind == "missing" and name == "purposes":
        return f"{label}: tick at least one"
    if kind == "missing" and name in ("purpose", "subject_id", "role"):
        return f"{label}: choose one"
    if kind == "missing":
        return f"{label}: this field is required"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{label}: enter a whole number"
    if kind == "greater_than_equal":
        return f"{label}: enter {ctx.get('ge')} or more"
    if kind == "less_than_equal":
        return f"{label}: enter {ctx.get('le')} or less"
    if kind == "string_too_short":
        return f"{label}: this field is required"
    if kind == "string_too_long":
        return f"{label}: at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"{label}: use one of the buttons of the form"
    return f"{label}: {item.get('msg', 'invalid value')}"


def validation_message(error: RequestValidationError) -> str:
    """A plain-English sentence naming each field of ``error`` and how to correct it."""
    fields = list(dict.fromkeys(_field_message(item) for item in error.errors()))
    return "; ".join(fields) + ". Correct the form and submit it again."


async def _typed(request: Request) -> dict[str, Any]:
    # The form was parsed (and cached on the request) before validation failed.
    try:
        form = await request.form()
    except Exception:  # noqa: BLE001 - a body that is not a form: nothing to show again
        return {}
    typed: dict[str, Any] = {"purposes": [
        v for v in form.getlist("purposes") if isinstance(v, str)]}
    for name, value in form.items():
        if isinstance(value, str) and name not in ("csrf", "login_csrf", "api_key", "purposes"):
            typed[name] = value
    return typed


async def _form_context(request: Request, template: str, typed: dict[str, Any]) -> dict[str, Any]:
    state = service_state(request)
    if template == "enrol.html":
        context = await enrol_context(request, str(typed.get("subject_id", "")))
        context.pop("error", None)  # the page's own error panel says more
        return context
    if template == "keys.html":
        keys = await state.call_service_db(state.keys.list)
        return {"keys": keys, "roles": [r.value for r in Role]}
    return {"purposes": state.gallery.config.purposes}


async def console_error(
    request: Request, status: int, error: dict[str, Any], *, keep_typed: bool
) -> Response:
    """The page ``request`` came from, with ``error`` in its error panel, at ``status``.

    Parameters
    ----------
    request : Request
        A request on a ``/console`` path.
    status : int
        HTTP status of the answer.
    error : dict
        The error panel: ``title`` and ``detail`` (what to do next).
    keep_typed : bool
        Fill the form again with the text fields that were sent.
    """
    path = request.url.path.rstrip("/") or "/"
    if path == "/console/login":
        return login_page(request, status=status, error=error)
    try:
        key = await session_key(request)
    except LoginRequired:
        return RedirectResponse("/console/login", status_code=303)
    page = FORM_PAGES.get(path)
    if page is None or request.method != "POST" or not keep_typed and status in (413, 503):
        back = path if page is not None else ""
        return render_page(request, key, "error.html", status=status, error=error, back=back)
    template, operation = page
    if not permits(key.role, operation):
        return forbidden_page(request, key, operation)
    typed = await _typed(request) if keep_typed else {}
    context = await _form_context(request, template, typed)
    return render_page(request, key, template, status=status, error=error, typed=typed,
                       **context)


def _is_console(request: Request) -> bool:
    return request.url.path == "/console" or request.url.path.startswith("/console/")


def install_error_pages(app: FastAPI) -> None:
    """Answer errors on ``/console`` paths with console pages; others keep their handler.

    Call after :func:`facetrust.service.problems.install_handlers`.
    """
    previous: dict[Any, Handler] = dict(app.exception_handlers)

    async def validation(request: Request, error: RequestValidationError) -> Response:
        if not _is_console(request):
            return await previous[RequestValidationError](request, error)
        note_problem(request, "validation-error")
        panel = {"title": "Check the form", "detail": validation_message(error),
                 "type": SERVICE_PROBLEMS["validation-error"].uri}
        return await console_error(request, 422, panel, keep_typed=True)

    async def service(request: Request, error: Problem) -> Response:
        if not _is_console(request):
            return await previous[Problem](request, error)
        note_problem(request, error.problem.slug)
        if error.problem.slug == "csrf-failed":
            panel = {"title": "Form expired or not sent from this console", "detail": (
                "Its security token does not match your session, so nothing was done. "
                "Fill in the form below and submit it again.")}
        else:
            panel = {"title": error.problem.title, "detail": error.detail}
        panel["type"] = error.problem.uri
        return await console_error(request, error.problem.status, panel, keep_typed=False)

    async def library(request: Request, error: FacetrustError) -> Response:
        if not _is_console(request):
            return await previous[FacetrustError](request, error)
        problem = problem_of(error)
        note_problem(request, problem.slug)
        panel = {"title": problem.title, "detail": str(error), "type": problem.uri}
        return await console_error(request, problem.status, panel, keep_typed=True)

    async def http(request: Request, error: StarletteHTTPException) -> Response:
        if not _is_console(request):
            return await previous[StarletteHTTPException](request, error)
        if error.status_code == 404:
            panel = {"title": "Page not found",
                     "detail": "There is no console page at this address. "
                               "Use the menu above to open a page."}
        elif error.status_code == 405:
            panel = {"title": "Not a page to open",
                     "detail": "This address only takes a submitted form. "
                               "Use the menu above to open the form."}
        else:
            panel = {"title": f"Error {error.status_code}",
                     "detail": "The request was refused. Use the menu above to start again."}
        note_problem(request, {404: "not-found", 405: "method-not-allowed"}.get(
            error.status_code, f"http-{error.status_code}"))
        return await console_error(request, error.status_code, panel, keep_typed=False)

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(Problem, service)  # type: ignore[arg-type]
    app.add_exception_handler(FacetrustError, library)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http)  # type: ignore[arg-type]


class ConsoleErrorPages:
    """Turn the problem+json answers of middlewares (413 body too large, 503 timeout)
    on ``/console`` paths into console pages, and answer an unexpected error there
    with the console's "Something went wrong" page (the error goes to the server
    log); every other answer passes unchanged.

    Add it outside :class:`~facetrust.service.limits.BodySizeLimit` and
    :class:`~facetrust.service.limits.RequestTimeout`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/console" and not path.startswith("/console/"):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = b""
        sent = False

        async def capture(message: Message) -> None:
            nonlocal start, body, sent
            if message["type"] == "http.response.start" and start is None:
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(PROBLEM_MEDIA_TYPE.encode()):
                    start = message
                    return
            if start is None:
                sent = True
                await send(message)
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                sent = True
                await self._page(scope, start, body, send)

        try:
            await self.app(scope, receive, capture)
        except Exception:
            if sent:
                raise
            log_unexpected(scope)
            if not await self._unexpected(scope, send):
                raise  # the page itself failed: the API's answer, from the outer middleware

    @staticmethod
    async def _unexpected(scope: Scope, send: Send) -> bool:
        request = Request(scope)
        internal = SERVICE_PROBLEMS["internal-error"]
        note_problem(request, internal.slug)
        request_id = (scope.get("state") or {}).get("request_id", "none")
        panel = {"title": "Something went wrong", "type": internal.uri,
                 "detail": "The console failed unexpectedly; nothing is shown of the error "
                           f"here, it is in the server log under request id {request_id}. "
                           "Try again, or tell your admin that request id."}
        try:
            response = await console_error(request, 500, panel, keep_typed=False)
        except Exception:  # noqa: BLE001 - e.g. the service database is down too
            return False

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)
        return True

    @staticmethod
    async def _page(scope: Scope, start: Message, body: bytes, send: Send) -> None:
        try:
            problem = json.loads(body)
            panel = {"title": str(problem["title"]), "detail": str(problem["detail"]),
                     "type": str(problem.get("type", ""))}
        except (ValueError, KeyError, TypeError):
            panel = {"title": "Error", "detail": "The request was refused. Try again."}
        request = Request(scope)
        response = await console_error(request, int(start["status"]), panel, keep_typed=False)
        retry_after = dict(start.get("headers", [])).get(b"retry-after")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after.decode("latin-1")
        if (b"connection", b"close") in start.get("headers", []):
            response.headers["Connection"] = "close"  # the body was not read to its end

        async def nothing() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, nothing, send)
