"""Errors as RFC 9457 ``application/problem+json``, with a stable ``type`` per error.

Each :class:`~facetrust.errors.FacetrustError` subclass and each HTTP error
the service raises itself has one ``type`` (``/problems/<slug>``, resolvable
against the service: ``GET /problems`` lists them all). A response never
carries a traceback: unexpected exceptions become ``internal-error`` and are
logged on the server only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from .. import errors
from ..gallery.refusals import bounded
from .metrics import route_of

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "/problems/"

log = logging.getLogger("facetrust.service")


@dataclass(frozen=True)
class ProblemType:
    """One kind of error: its slug (the end of its ``type`` URI), HTTP status and title."""

    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.slug


def _t(slug: str, status: int, title: str) -> ProblemType:
    return ProblemType(slug, status, title)


#: Library errors, most specific first (the first ``isinstance`` match wins).
LIBRARY_PROBLEMS: tuple[tuple[type[errors.FacetrustError], ProblemType], ...] = (
    (errors.ModelMismatch, _t("model-mismatch", 422, "Templates of different models")),
    (errors.NotAnImage, _t("not-an-image", 415, "Not a supported image")),
    (errors.CorruptImage, _t("corrupt-image", 422, "Corrupt image")),
    (errors.ImageTooLarge, _t("image-too-large", 413, "Image too large")),
    (errors.ImageTooSmall, _t("image-too-small", 422, "Image too small")),
    (errors.UnsupportedImageMode, _t("unsupported-image-mode", 422, "Unsupported image mode")),
    (errors.NoFaceFound, _t("no-face-found", 422, "No face found")),
    (errors.MultipleFaces, _t("multiple-faces", 422, "Several faces in the image")),
    (errors.FaceQualityTooLow, _t("face-quality-too-low", 422, "Face quality too low")),
    (errors.ConsentRequired, _t("consent-required", 409, "No active consent")),
    (errors.ConsentExpired, _t("consent-expired", 409, "Consent or retention expired")),
    (errors.ConsentWithdrawn, _t("consent-withdrawn", 409, "Consent withdrawn")),
    (errors.PurposeNotConsented, _t("purpose-not-consented", 409, "Purpose not consented")),
    (errors.ConsentError, _t("consent-error", 409, "Consent does not allow this")),
    (errors.EventOnlySubject,
     _t("event-only-subject", 409, "Subject enrolled for one event only")),
    (errors.PurposeRequired, _t("purpose-required", 422, "Purpose required")),
    (errors.UnknownSubject, _t("unknown-subject", 404, "Unknown subject")),
    (errors.UnknownIdentification, _t("unknown-identification", 404, "Unknown identification")),
    (errors.ReviewClosed, _t("review-closed", 409, "Review not possible in this state")),
    (errors.ReviewNotAllowed, _t("review-not-allowed", 403, "Reviewer not allowed")),
    (errors.DuplicateEnrolment, _t("duplicate-enrolment", 409, "Face already enrolled")),
    (errors.AuthorizationError, _t("forbidden", 403, "Forbidden")),
    (errors.InvalidParameter, _t("invalid-parameter", 422, "Invalid parameter")),
    (errors.EvaluationError, _t("evaluation-error", 422, "Evaluation input invalid")),
    (errors.ImageError, _t("image-error", 422, "Unusable image")),
    (errors.FaceError, _t("face-error", 422, "No usable face")),
    (errors.StoreUnavailable, _t("store-unavailable", 503, "Database unreachable")),
    (errors.StoreError, _t("store-conflict", 409, "The store refused the change")),
    (errors.ModelError, _t("model-unavailable", 503, "Face model unavailable")),
    (errors.KeyMaterialError, _t("key-unavailable", 503, "Key material unavailable")),
    (errors.AuditChainBroken, _t("audit-chain-broken", 503, "Audit log broken")),
    (errors.OperatingPointError, _t("operating-point-error", 503, "Operating point missing")),
    (errors.FacetrustError, _t("facetrust-error", 422, "Request refused")),
)

#: Errors of the service itself.
SERVICE_PROBLEMS: Mapping[str, ProblemType] = {
    p.slug: p
    for p in (
        _t("bad-request", 400, "Bad request"),
        _t("unauthorized", 401, "API key missing or invalid"),
        _t("forbidden", 403, "Forbidden"),
        _t("not-found", 404, "Not found"),
        _t("method-not-allowed", 405, "Method not allowed"),
        _t("header-timeout", 408, "Request headers too slow"),
        _t("body-too-large", 413, "Request body too large"),
        _t("validation-error", 422, "Request validation failed"),
        _t("headers-too-large", 431, "Request headers too large"),
        _t("rate-limited", 429, "Too many requests"),
        _t("internal-error", 500, "Internal error"),
        _t("busy", 503, "Service busy"),
        _t("not-ready", 503, "Service not ready"),
        _t("request-timeout", 503, "Request timed out"),
        _t("csrf-failed", 403, "Form token missing or invalid"),
        _t("idempotency-key-reused", 422, "Idempotency key used for another request"),
    )
}

_BY_STATUS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "body-too-large",
    422: "validation-error",
    429: "rate-limited",
    503: "busy",
}


def catalogue() -> list[dict[str, Any]]:
    """Every problem type the service can answer with (served at ``GET /problems``)."""
    seen: dict[str, ProblemType] = {}
    for _, problem in LIBRARY_PROBLEMS:
        seen.setdefault(problem.slug, problem)
    for problem in SERVICE_PROBLEMS.values():
        seen.setdefault(problem.slug, problem)
    return [
        {"type": p.uri, "status": p.status, "title": p.title}
        for p in sorted(seen.values(), key=lambda p: p.slug)
    ]


def problem_of(error: errors.FacetrustError) -> ProblemType:
    """The problem type of a library error."""
    for kind, problem in LIBRARY_PROBLEMS:
        if isinstance(error, kind):
            return problem
    return LIBRARY_PROBLEMS[-1][1]  # FacetrustError's entry: unreachable for its subclasses


class Problem(Exception):
    """An HTTP error the service raises itself, by slug of :data:`SERVICE_PROBLEMS`."""

    def __init__(
        self, slug: str, detail: str, *, headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.problem = SERVICE_PROBLEMS[slug]
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(
    problem: ProblemType,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """An RFC 9457 response for ``problem``.

    ``instance`` (the request's path) is cut to its start and its length past 200
    characters (:func:`~facetrust.gallery.refusals.bounded`, as the audit log cuts
    what it copies from a request): a request does not choose the size of its answer.
    """
    body: dict[str, Any] = {
        "type": problem.uri,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
    }
    if instance:
        body["instance"] = bounded(instance)
    body.update(extra)
    return JSONResponse(
        body, status_code=problem.status, headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    # Only where and what: never echo the input (it may be an image).
    return [
        {"loc": [str(part) for part in item.get("loc", ())], "msg": str(item.get("msg", ""))}
        for item in error.errors()
    ]


def log_unexpected(scope: Scope) -> None:
    """Log the exception being handled for the request of ``scope``, named by its method,
    route template and request id: never its path or query (they hold subject and
    identification ids, search terms, reasons), as the access log (:mod:`.metrics`)."""
    request_id = (scope.get("state") or {}).get("request_id", "none")
    log.exception("Unexpected error on %s %s (request id %s)", scope.get("method"),
                  route_of(scope), request_id)


def note_problem(request: Request, slug: str) -> None:
    """Count one answer of problem type ``slug`` in the app's metrics (if it has them)."""
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.problem(slug)


def install_handlers(app: FastAPI) -> None:
    """Turn every exception into problem+json, and record its type for the metrics."""

    def note(request: Request, problem: ProblemType) -> None:
        note_problem(request, problem.slug)

    @app.exception_handler(errors.FacetrustError)
    async def library_error(request: Request, error: errors.FacetrustError) -> JSONResponse:
        problem = problem_of(error)
        note(request, problem)
        retry = {"Retry-After": "1"} if isinstance(error, errors.StoreUnavailable) else None
        where = {"field": error.field} if error.field else {}  # which input, e.g. image_b
        return problem_response(problem, str(error), instance=request.url.path, headers=retry,
                                **where)

    @app.exception_handler(Problem)
    async def service_error(request: Request, error: Problem) -> JSONResponse:
        note(request, error.problem)
        return problem_response(
            error.problem, error.detail, instance=request.url.path, headers=error.headers,
            **error.extra,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        slug = _BY_STATUS.get(error.status_code)
        problem = SERVICE_PROBLEMS[slug] if slug else _t(
            f"http-{error.status_code}", error.status_code, "HTTP error"
        )
        note(request, problem)
        detail = error.detail if isinstance(error.detail, str) else problem.title
        return problem_response(
            problem, detail, instance=request.url.path, headers=getattr(error, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = SERVICE_PROBLEMS["validation-error"]
        note(request, problem)
        return problem_response(
            problem,
            "The request does not match the API: see 'errors' and the OpenAPI document.",
            instance=request.url.path,
            errors=_validation_errors(error),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log_unexpected(request.scope)
        problem = SERVICE_PROBLEMS["internal-error"]
        note(request, problem)
        return problem_response(
            problem,
            "The service failed unexpectedly; the error is in the server log.",
            instance=request.url.path,
        )


_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; `type` is stable per kind of error.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["/problems/no-face-found"]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries declaring problem+json bodies for ``statuses``."""
    return {
        status: {
            "description": ", ".join(
                sorted({p.slug for p in _all_problem_types() if p.status == status})
            ) or "error",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def _all_problem_types() -> list[ProblemType]:
    return [p for _, p in LIBRARY_PROBLEMS] + list(SERVICE_PROBLEMS.values())


#: Errors any authenticated endpoint may answer with (429: too many failed keys).
AUTH_PROBLEMS = problem_responses(400, 401, 403, 422, 429, 503)
#: Errors of endpoints that take a face image.
IMAGE_PROBLEMS = problem_responses(404, 409, 413, 415)
