"""Subject pages: find a subject, see what the gallery holds about them, and act on it.

- ``/console/subjects``: search by id or display name, one page at a time
  (keyset paging over the store, :meth:`Gallery.find_subjects`).
- ``/console/subjects/{id}``: the subject's consent history, template count,
  photos kept and retention date (each view audited, :meth:`Gallery.view_subject`),
  with the actions the role may take: withdraw a consent, erase (the id typed
  to confirm, checked by :meth:`Gallery.forget`).
- ``/console/verify-subject``: an operator checks a photo against one subject
  (1:1, :meth:`Gallery.verify_subject`) for a purpose they choose and a case.

Every refusal is the page again with the reason inline, never problem+json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import Response

from ...errors import FacetrustError, UnknownSubject
from ...gallery import Gallery
from ...gallery.checks import MAX_PURPOSE_LENGTH, TEXT_LIMITS
from ..apikeys import ApiKey
from ..auth import service_state, spend_token
from ..inputs import require_single_parts, text_bound
from ..permissions import permits
from ..problems import SERVICE_PROBLEMS, problem_of
from .access import guard
from .csrf import check_csrf
from .previews import photo_preview
from .rendering import PREFIX, error_context, render_page

__all__ = ["PAGE_SIZE", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

#: Subjects on one page of the list.
PAGE_SIZE = 25

SubjectId = Annotated[str, Form(max_length=200)]


def _actions(key: ApiKey) -> dict[str, bool]:
    """Which of the subject page's actions ``key`` may take (the page shows only those)."""
    return {"may_withdraw": permits(key.role, "withdraw_consent"),
            "may_erase": permits(key.role, "erase_subject"),
            "may_verify": permits(key.role, "verify_subject")}


async def _subject_page(
    request: Request, key: ApiKey, subject_id: str, status: int = 200, **context: Any
) -> Response:
    """The subject page (an audited view), or the reason it cannot be shown."""
    state = service_state(request)
    try:
        overview = await state.call(lambda g: g.view_subject(subject_id, actor=key.actor))
    except UnknownSubject as error:
        return render_page(request, key, "subjects.html", status=404,
                           error=error_context(error), page=None, query="", after="")
    return render_page(request, key, "subject.html", status=status, overview=overview,
                       **_actions(key), **context)


@router.get("/subjects")
async def subjects_list(
    request: Request,
    q: Annotated[str, Query(max_length=200)] = "",
    after: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """One page of subjects, optionally those whose id or display name contains ``q``."""
    key = await guard(request, "list_subjects")
    if isinstance(key, Response):
        return key
    page = await service_state(request).call(
        lambda g: g.find_subjects(q, after=after or None, limit=PAGE_SIZE)
    )
    return render_page(request, key, "subjects.html", page=page, query=q, after=after)


@router.get("/subjects/{subject_id}")
async def subject_view(request: Request, subject_id: str) -> Response:
    """What the gallery holds about one subject, and the actions the role may take."""
    key = await guard(request, "get_subject")
    if isinstance(key, Response):
        return key
    return await _subject_page(request, key, subject_id)


async def _act(
    request: Request,
    subject_id: str,
    operation: str,
    csrf: str,
    act: Callable[[Gallery, ApiKey], Any],
    **typed: str,
) -> Response | tuple[ApiKey, Any]:
    """One of the subject page's actions: the role's guard, the CSRF check, then ``act``.

    Returns the key and what ``act`` returned, or the page to answer with: the
    sign-in page, or the subject page again with the refusal's reason (and
    what the person ``typed``); for an unknown subject, the list with the
    reason (there is no subject page to show, and trying would audit a second
    refusal for the one request).
    """
    key = await guard(request, operation)
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    try:
        return key, await service_state(request).call(lambda g: act(g, key))
    except UnknownSubject as error:
        return render_page(request, key, "subjects.html", status=404,
                           error=error_context(error), page=None, query="", after="")
    except FacetrustError as error:
        kept = {"typed": typed} if typed else {}
        return await _subject_page(request, key, subject_id, status=problem_of(error).status,
                                   error=error_context(error), **kept)


@router.post("/subjects/{subject_id}/withdraw")
async def subject_withdraw(
    request: Request,
    subject_id: str,
    csrf: Annotated[str, Form()],
    consent_id: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Withdraw one consent of the subject (all active ones without ``consent_id``)."""
    done = await _act(request, subject_id, "withdraw_consent", csrf, lambda g, key: (
        g.withdraw_consent(subject_id, consent_id or None, actor=key.actor,
                           reason="withdrawn by the subject (console)")))
    if isinstance(done, Response):
        return done
    key, result = done
    return await _subject_page(request, key, subject_id, withdrawal=result)


@router.post("/subjects/{subject_id}/erase")
async def subject_erase(
    request: Request,
    subject_id: str,
    csrf: Annotated[str, Form()],
    confirm_id: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Erase the subject for good, if the id typed to confirm is the subject's."""
    done = await _act(request, subject_id, "erase_subject", csrf, lambda g, key: (
        g.forget(subject_id, actor=key.actor, reason="erasure requested (console)",
                 confirm_id=confirm_id)), confirm_id=confirm_id)
    if isinstance(done, Response):
        return done
    key, erased = done
    return render_page(request, key, "subjects.html", erased=erased, page=None, query="",
                       after="")


@router.get("/verify-subject")
async def verify_subject_form(
    request: Request, subject_id: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    """The form to check a photo against one enrolled subject."""
    key = await guard(request, "verify_subject")
    if isinstance(key, Response):
        return key
    return render_page(request, key, "verify_subject.html",
                       purposes=service_state(request).gallery.config.purposes,
                       typed={"subject_id": subject_id})


@router.post("/verify-subject")
async def verify_subject_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    subject_id: SubjectId = "",
    purpose: Annotated[str, Form(max_length=text_bound(MAX_PURPOSE_LENGTH))] = "",
    case_ref: Annotated[str, Form(max_length=text_bound(TEXT_LIMITS["case_ref"]))] = "",
    photo: UploadFile | None = None,
) -> Response:
    """Compare the photo with the subject's templates, for the purpose the operator chose.

    Rate limited per key, sharing the API's bucket for ``verify_subject``.
    """
    key = await guard(request, "verify_subject")
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    await require_single_parts(request, "photo")
    state = service_state(request)
    context: dict[str, Any] = {
        "purposes": state.gallery.config.purposes,
        "typed": {"subject_id": subject_id, "purpose": purpose, "case_ref": case_ref},
    }
    limited = await spend_token(state, "verify_subject", key)  # the API's bucket
    if limited is not None:
        return render_page(request, key, "verify_subject.html", status=429,
                           error=error_context(limited), **context)
    data = await photo.read() if photo is not None else b""
    context["photo"] = await photo_preview(data, state.gallery.pipeline.settings)
    if purpose and not case_ref.strip():
        # the library refuses it too, in words for a program; these are for the form
        panel = {"title": "Check the form",
                 "detail": "Case reference: this field is required. Name the case or ticket "
                           "this check belongs to, and submit it again.",
                 "type": SERVICE_PROBLEMS["validation-error"].uri}
        return render_page(request, key, "verify_subject.html", status=422, error=panel,
                           **context)
    try:
        result = await state.use_biometrics(
            key, "verify_subject",
            lambda g: g.verify_subject(data, subject_id, purpose=purpose or None,
                                       actor=key.actor, case_ref=case_ref or None),
            purpose=purpose or None, subject_ids=[subject_id] if subject_id else [],
        )
    except FacetrustError as error:
        return render_page(request, key, "verify_subject.html", status=problem_of(error).status,
                           error=error_context(error), **context)
    return render_page(request, key, "verify_subject.html", result=result, **context)
