"""The web console: server-rendered pages over the same library calls as the API.

Log in with an API key; it is kept in an HttpOnly, SameSite=Strict session
cookie scoped to ``/console`` (``Secure`` when ``secure_cookies`` is set).
Every form carries a CSRF token bound to the session. Each page checks the
same permission table as the API, and the navigation shows only the pages
the key's role may use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import secrets
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from PIL import Image

from ...errors import FacetrustError, UnknownSubject
from ...gallery import Gallery
from ...gallery.photos import enroll_photo, verify_photos
from ..apikeys import ApiKey, Role
from ..auth import SESSION_COOKIE, service_state
from ..limits import rate_limited
from ..permissions import permits
from ..problems import Problem, problem_of
from ..reports import REPORT_TYPES, report_files
from ..routes_search import HUMAN_REVIEW_NOTICE

router = APIRouter(prefix="/console", include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

#: Console pages: (path, title, operation that grants the page), in menu order.
PAGES = (
    ("/console/consent", "Consent", "grant_consent"),
    ("/console/enrol", "Enrol", "enroll_photo"),
    ("/console/verify", "Verify", "verify_photos"),
    ("/console/identify", "Identify", "identify"),
    ("/console/audit", "Audit trail", "list_audit_events"),
    ("/console/reports", "Evaluation reports", "list_reports"),
    ("/console/keys", "API keys", "list_api_keys"),
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


LOGIN_COOKIE = "facetrust_login_csrf"


class _LoginRequired(Exception):
    pass


def _csrf_token(request: Request, session: str) -> str:
    secret = service_state(request).csrf_secret
    return hmac.new(secret, b"csrf:" + hashlib.sha256(session.encode()).digest(),
                    hashlib.sha256).hexdigest()


async def _session(request: Request) -> ApiKey:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise _LoginRequired
    state = service_state(request)
    key = await anyio.to_thread.run_sync(state.keys.authenticate, cookie)
    if key is None:
        raise _LoginRequired
    return key


def _check_csrf(request: Request, token: str) -> None:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not hmac.compare_digest(_csrf_token(request, cookie), token):
        raise Problem("csrf-failed", "The form is stale or forged. Reload the page and retry.")


def _page(
    request: Request, key: ApiKey | None, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    cookie = request.cookies.get(SESSION_COOKIE, "")
    menu = [(p, t) for p, t, op in PAGES if key is not None and permits(key.role, op)]
    response = templates.TemplateResponse(
        request,
        template,
        {"key": key, "menu": menu, "csrf": _csrf_token(request, cookie) if key else "",
         **context},
        status_code=status,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _error(error: FacetrustError | Problem) -> dict[str, Any]:
    if isinstance(error, Problem):
        return {"title": error.problem.title, "detail": error.detail,
                "type": error.problem.uri, "status": error.problem.status}
    problem = problem_of(error)
    return {"title": problem.title, "detail": str(error), "type": problem.uri,
            "status": problem.status}


async def _guard(request: Request, operation: str) -> ApiKey | Response:
    """The session's key if it may use ``operation``; else a login redirect or a 403 page."""
    try:
        key = await _session(request)
    except _LoginRequired:
        return RedirectResponse("/console/login", status_code=303)
    if not permits(key.role, operation):
        return _page(request, key, "forbidden.html", status=403, operation=operation)
    return key


def _data_url(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def _chip_url(chip: Any) -> str | None:
    if chip is None:
        return None
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="PNG")
    return _data_url(buffer.getvalue(), "image/png")


def _photo_url(data: bytes) -> str:
    """A small JPEG copy of an uploaded photo to show beside its result."""
    with Image.open(io.BytesIO(data)) as image:
        copy = image.convert("RGB")
        copy.thumbnail((320, 320))
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=85)
    return _data_url(buffer.getvalue())


# ---------------------------------------------------------------- session
def _login_page(request: Request, status: int = 200, **context: Any) -> Response:
    # Login CSRF: a random token in a SameSite=Strict cookie and in the form (double submit).
    token = secrets.token_urlsafe(32)
    response = _page(request, None, "login.html", status=status, login_csrf=token, **context)
    response.set_cookie(
        LOGIN_COOKIE, token, path="/console/login", httponly=True, samesite="strict",
        secure=service_state(request).settings.secure_cookies,
    )
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
async def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)],
    login_csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, login_csrf):
        return _login_page(request, status=403, error={
            "title": "Login form expired", "detail": "Reload the login page and try again."})
    key = await anyio.to_thread.run_sync(service_state(request).keys.authenticate, api_key)
    if key is None:
        return _login_page(request, status=401, error={
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
    _check_csrf(request, csrf)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/")
async def home(request: Request) -> Response:
    try:
        key = await _session(request)
    except _LoginRequired:
        return RedirectResponse("/console/login", status_code=303)
    return _page(request, key, "home.html")


# ---------------------------------------------------------------- enroller
@router.get("/consent")
async def consent_form(request: Request) -> Response:
    key = await _guard(request, "grant_consent")
    if isinstance(key, Response):
        return key
    state = service_state(request)
    return _page(request, key, "consent.html", purposes=state.gallery.config.purposes)


@router.post("/consent")
async def consent_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    subject_id: Annotated[str, Form(min_length=1, max_length=200)],
    evidence_ref: Annotated[str, Form(min_length=1, max_length=500)],
    notice_version: Annotated[str, Form(min_length=1, max_length=100)],
    expires_on: Annotated[str, Form()],
    purposes: Annotated[list[str], Form()],
    display_name: Annotated[str, Form(max_length=200)] = "",
    evidence_sha256: Annotated[str, Form(max_length=64)] = "",
    evidence_file: UploadFile | None = None,
) -> Response:
    key = await _guard(request, "grant_consent")
    if isinstance(key, Response):
        return key
    _check_csrf(request, csrf)
    state = service_state(request)
    digest = evidence_sha256.strip()
    if evidence_file is not None and evidence_file.filename:
        digest = hashlib.sha256(await evidence_file.read()).hexdigest()
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes}
    try:
        expires = datetime.combine(
            datetime.fromisoformat(expires_on).date(), time(23, 59, 59), tzinfo=UTC
        )
    except ValueError:
        expires = datetime.now(UTC) - timedelta(days=1)  # refused below with a clear message

    def grant(gallery: Gallery) -> Any:
        try:
            gallery.get_subject(subject_id)
        except UnknownSubject:
            gallery.add_subject(subject_id, display_name=display_name or None, actor=key.actor)
        return gallery.grant_consent(
            subject_id, purposes, expires_at=expires, evidence_ref=evidence_ref,
            evidence_sha256=digest, notice_version=notice_version, actor=key.actor,
        )

    try:
        consent = await state.call(grant)
    except FacetrustError as error:
        return _page(request, key, "consent.html", status=problem_of(error).status,
                     error=_error(error), **context)
    return _page(request, key, "consent.html", consent=consent, **context)


@router.get("/enrol")
async def enrol_form(request: Request) -> Response:
    key = await _guard(request, "enroll_photo")
    if isinstance(key, Response):
        return key
    subjects = await service_state(request).call(lambda g: g.list_subjects())
    return _page(request, key, "enrol.html", subjects=subjects)


@router.post("/enrol")
async def enrol_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    subject_id: Annotated[str, Form(min_length=1, max_length=200)],
    photo: UploadFile,
) -> Response:
    key = await _guard(request, "enroll_photo")
    if isinstance(key, Response):
        return key
    _check_csrf(request, csrf)
    state = service_state(request)
    data = await photo.read()
    context: dict[str, Any] = {}
    try:
        result = await state.use_biometrics(
            key, "enroll_photo", lambda g: enroll_photo(g, subject_id, data, actor=key.actor)
        )
        context = {"result": result, "chip": _chip_url(result.face.chip),
                   "photo": _photo_url(data), "limits": state.gallery.pipeline.settings}
        status = 201
    except FacetrustError as error:
        context, status = {"error": _error(error)}, problem_of(error).status
    subjects = await state.call(lambda g: g.list_subjects())
    return _page(request, key, "enrol.html", status=status, subjects=subjects, **context)


# ---------------------------------------------------------------- operator
@router.get("/verify")
async def verify_form(request: Request) -> Response:
    key = await _guard(request, "verify_photos")
    if isinstance(key, Response):
        return key
    purposes = service_state(request).gallery.config.purposes
    return _page(request, key, "verify.html", purposes=purposes)


@router.post("/verify")
async def verify_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    purpose: Annotated[str, Form(min_length=1, max_length=100)],
    case_ref: Annotated[str, Form(min_length=1, max_length=200)],
    image_a: UploadFile,
    image_b: UploadFile,
) -> Response:
    key = await _guard(request, "verify_photos")
    if isinstance(key, Response):
        return key
    _check_csrf(request, csrf)
    state = service_state(request)
    a, b = await image_a.read(), await image_b.read()
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes}
    try:
        result = await state.use_biometrics(
            key, "verify_photos",
            lambda g: verify_photos(g, a, b, purpose=purpose, actor=key.actor, case_ref=case_ref),
        )
        context.update(result=result, photos=(_photo_url(a), _photo_url(b)))
        status = 200
    except FacetrustError as error:
        context["error"], status = _error(error), problem_of(error).status
    return _page(request, key, "verify.html", status=status, **context)


@router.get("/identify")
async def identify_form(request: Request) -> Response:
    key = await _guard(request, "identify")
    if isinstance(key, Response):
        return key
    purposes = service_state(request).gallery.config.purposes
    return _page(request, key, "identify.html", purposes=purposes)


@router.post("/identify")
async def identify_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    purpose: Annotated[str, Form(min_length=1, max_length=100)],
    case_ref: Annotated[str, Form(min_length=1, max_length=200)],
    image: UploadFile,
    k: Annotated[int, Form(ge=1, le=50)] = 5,
) -> Response:
    key = await _guard(request, "identify")
    if isinstance(key, Response):
        return key
    _check_csrf(request, csrf)
    state = service_state(request)
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes,
                               "notice": HUMAN_REVIEW_NOTICE}
    wait = state.identify_bucket.take(key.key_id)
    if wait:
        state.metrics.rate_limited()
        problem = rate_limited(wait, "identify")
        return _page(request, key, "identify.html", status=429, error=_error(problem), **context)
    data = await image.read()
    try:
        result = await state.use_biometrics(
            key, "identify",
            lambda g: g.identify(data, purpose=purpose, actor=key.actor, k=k, case_ref=case_ref),
        )
        context.update(result=result, photo=_photo_url(data))
        status = 200
    except FacetrustError as error:
        context["error"], status = _error(error), problem_of(error).status
    return _page(request, key, "identify.html", status=status, **context)


@router.post("/review")
async def review_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    identification_id: Annotated[str, Form(min_length=1, max_length=200)],
    subject_id: Annotated[str, Form(min_length=1, max_length=200)],
    decision: Annotated[str, Form(pattern="^(confirm|reject)$")],
) -> Response:
    key = await _guard(request, "review_candidate")
    if isinstance(key, Response):
        return key
    _check_csrf(request, csrf)
    state = service_state(request)
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes,
                               "notice": HUMAN_REVIEW_NOTICE}
    try:
        context["review"] = await state.use_biometrics(
            key, "review_candidate",
            lambda g: g.review(identification_id, subject_id, reviewer=key.actor,
                               decision=decision),
        )
        status = 200
    except FacetrustError as error:
        context["error"], status = _error(error), problem_of(error).status
    return _page(request, key, "identify.html", status=status, **context)


# ---------------------------------------------------------------- auditor
@router.get("/audit")
async def audit_page(request: Request, kind: str = "", subject: str = "") -> Response:
    key = await _guard(request, "list_audit_events")
    if isinstance(key, Response):
        return key

    def read(gallery: Gallery) -> tuple[Any, list[Any]]:
        report = gallery.audit.verify()
        events = list(gallery.audit.events(kind=kind or None, subject=subject or None))
        return report, events[-200:][::-1]

    report, events = await service_state(request).call(read)
    return _page(request, key, "audit.html", report=report, events=events, kind=kind,
                 subject=subject)


@router.get("/reports")
async def reports_page(request: Request) -> Response:
    key = await _guard(request, "list_reports")
    if isinstance(key, Response):
        return key
    reports = report_files(service_state(request).reports_dir)
    return _page(request, key, "reports.html", reports=reports)


@router.get("/reports/{name}")
async def report_page(request: Request, name: str) -> Response:
    key = await _guard(request, "get_report")
    if isinstance(key, Response):
        return key
    for path in report_files(service_state(request).reports_dir):
        if path.name != name:
            continue
        if path.suffix == ".json":
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                content = None
            return _page(request, key, "report.html", name=name, content=content,
                         text=json.dumps(content, indent=2) if content is not None else "")
        response = FileResponse(path, media_type=REPORT_TYPES[path.suffix])
        response.headers.update({**SECURITY_HEADERS, "Content-Security-Policy": "sandbox"})
        return response
    return _page(request, key, "forbidden.html", status=404, operation=f"report {name}")


# ---------------------------------------------------------------- admin
@router.get("/keys")
async def keys_page(request: Request) -> Response:
    key = await _guard(request, "list_api_keys")
    if isinstance(key, Response):
        return key
    return _page(request, key, "keys.html", keys=service_state(request).keys.list(),
                 roles=[r.value for r in Role])


@router.post("/keys")
async def keys_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    action: Annotated[str, Form()],
    role: Annotated[str, Form()] = "",
    name: Annotated[str, Form(max_length=200)] = "",
    key_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    operation = {"create": "create_api_key", "revoke": "revoke_api_key",
                 "sweep": "sweep_retention"}.get(action, "create_api_key")
    key = await _guard(request, operation)
    if isinstance(key, Response):
        return key
    _check_csrf(request, csrf)
    state = service_state(request)
    context: dict[str, Any] = {}
    status = 200
    try:
        if action == "create":
            context["created"] = state.keys.create(role, name, created_by=key.actor)
        elif action == "revoke":
            context["revoked"] = state.keys.revoke(key_id)
        elif action == "sweep":
            context["sweep"] = await state.use_biometrics(
                key, "sweep_retention", lambda g: g.sweep_retention(actor=key.actor)
            )
    except FacetrustError as error:
        context["error"], status = _error(error), problem_of(error).status
    return _page(request, key, "keys.html", status=status, keys=state.keys.list(),
                 roles=[r.value for r in Role], **context)
