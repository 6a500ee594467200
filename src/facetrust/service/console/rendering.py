"""Rendering console pages: templates, menu and error panels.

Their security headers (no-store, CSP, ...) are set for every answer in one place,
:class:`facetrust.service.headers.PrivacyHeaders`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from ...errors import FacetrustError
from ...text import shown
from ..apikeys import ApiKey
from ..permissions import permits
from ..problems import Problem, problem_of
from .csrf import csrf_token

__all__ = [
    "LABELS", "PAGES", "PROBLEM_TYPE_HEADER", "error_context", "render_page", "templates",
]

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _visible(value: object) -> object:
    """Every value a page shows, with its hidden characters made visible as
    ``⟨U+202E⟩`` (:func:`facetrust.text.shown`): text recorded as given (a refused
    request's fields in the audit trail, data from before the gallery refused such
    characters) cannot reorder or hide what a reviewer or auditor reads. Line
    breaks and tabs are only white space in a page, and a report's text has them."""
    if not isinstance(value, str):
        return value
    visible = shown(value, keep="\n\r\t")
    return Markup(visible) if isinstance(value, Markup) else visible


templates.env.finalize = _visible

#: Console pages: (path, title, operation that grants the page), in menu order.
#: Where the console's pages live: every console router is made with this prefix.
PREFIX = "/console"

PAGES = (
    ("/console/subjects", "Subjects", "list_subjects"),
    ("/console/consent", "Consent", "grant_consent"),
    ("/console/enrol", "Enrol", "enroll_photo"),
    ("/console/verify", "Verify", "verify_photos"),
    ("/console/verify-subject", "Verify subject", "verify_subject"),
    ("/console/identify", "Identify", "identify"),
    ("/console/reviews", "Review queue", "list_review_queue"),
    ("/console/audit", "Audit trail", "list_audit_events"),
    ("/console/reports", "Evaluation reports", "list_reports"),
    ("/console/keys", "API keys", "list_api_keys"),
)

#: Response header naming the problem type of a console error page.
PROBLEM_TYPE_HEADER = "X-Problem-Type"


def render_page(
    request: Request, key: ApiKey | None, template: str, status: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``template`` for ``key`` with the menu and CSRF token.

    Parameters
    ----------
    request : Request
        The request being answered.
    key : ApiKey or None
        The logged-in key; None on the login page (no menu, no CSRF token).
    template : str
        File name under ``templates/``.
    status : int, default 200
        HTTP status of the response.
    **context
        Further template variables.
    """
    menu = [(p, t) for p, t, op in PAGES if key is not None and permits(key.role, op)]
    response = templates.TemplateResponse(
        request,
        template,
        {"key": key, "menu": menu, "csrf": csrf_token(request) if key else "",
         "typed": {}, **context},
        status_code=status,
    )
    error = context.get("error")
    if isinstance(error, dict) and error.get("type"):
        # the problem type of an error page, for the audit of refusals (RefusalAudit)
        response.headers[PROBLEM_TYPE_HEADER] = str(error["type"])
        response.headers.update(error.get("headers") or {})  # Retry-After, as the API's
    return response


#: Form field names as the pages label them.
LABELS = {
    "purpose": "Purpose", "purposes": "Purposes", "case_ref": "Case reference",
    "k": "Most candidates", "image": "Photo", "image_a": "Photo A", "image_b": "Photo B",
    "photo": "Photo", "subject_id": "Subject", "expires_on": "Expires on",
    "evidence_ref": "Evidence reference", "notice_version": "Privacy notice version",
    "display_name": "Display name", "evidence_sha256": "SHA-256 of the signed form",
    "csrf": "Form token", "api_key": "API key", "name": "Used by", "role": "Role",
}


def error_context(error: FacetrustError | Problem) -> dict[str, Any]:
    """The template's ``error`` panel (title, detail, type URI, status) for ``error``."""
    if isinstance(error, Problem):
        return {"title": error.problem.title, "detail": error.detail,
                "type": error.problem.uri, "status": error.problem.status,
                "headers": error.headers}
    problem = problem_of(error)
    detail = str(error)
    if error.field in ("image", "image_a", "image_b", "photo"):  # which of the photos
        detail = f"{LABELS[error.field]}: {detail}"
    return {"title": problem.title, "detail": detail, "type": problem.uri,
            "status": problem.status}
