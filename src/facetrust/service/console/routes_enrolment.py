"""Enroller pages: record a subject's consent, and enrol a photo of a consenting subject."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import Response

from ...errors import FaceQualityTooLow, FacetrustError, UnknownSubject
from ...gallery import Gallery
from ...gallery.checks import MAX_DISPLAY_NAME_LENGTH, TEXT_LIMITS
from ...gallery.photos import enroll_photo
from ...pipeline import DEFAULT_FACE_POLICY, FacePolicy
from ...times import parse_time
from ..auth import service_state, spend_token
from ..inputs import require_single_parts, text_bound
from ..problems import problem_of
from .access import guard, purpose_form
from .csrf import check_csrf
from .previews import chip_url, photo_preview
from .rendering import PREFIX, error_context, render_page

__all__ = ["ENROL_MATCHES", "enrol_context", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/consent")
async def consent_form(request: Request) -> Response:
    """Show the consent form."""
    return await purpose_form(request, "grant_consent", "consent.html")


@router.post("/consent")
async def consent_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    subject_id: Annotated[str, Form(min_length=1, max_length=200)],
    evidence_ref: Annotated[str, Form(
        min_length=1, max_length=text_bound(TEXT_LIMITS["evidence_ref"]))],
    notice_version: Annotated[str, Form(
        min_length=1, max_length=text_bound(TEXT_LIMITS["notice_version"]))],
    expires_on: Annotated[str, Form()],
    purposes: Annotated[list[str], Form()],
    display_name: Annotated[str, Form(max_length=text_bound(MAX_DISPLAY_NAME_LENGTH))] = "",
    evidence_sha256: Annotated[str, Form(max_length=200)] = "",
    evidence_file: UploadFile | None = None,
) -> Response:
    """Grant consent (adding the subject first if new) until the start (00:00 UTC) of the
    date given, the instant the same date means at the CLI and in a consent CSV."""
    key = await guard(request, "grant_consent")
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    state = service_state(request)
    digest = evidence_sha256
    if evidence_file is not None and evidence_file.filename:
        digest = hashlib.sha256(await evidence_file.read()).hexdigest()
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes}

    def grant(gallery: Gallery) -> Any:
        expires = parse_time(expires_on, "expires_on")  # as the CLI reads --expires
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
        return render_page(request, key, "consent.html", status=problem_of(error).status,
                           error=error_context(error), **context)
    return render_page(request, key, "consent.html", consent=consent, **context)


async def enrol_context(
    request: Request, subject_id: str = "", query: str = "", after: str = ""
) -> dict[str, Any]:
    """The enrolment page's subject: the one chosen (by id), or the subjects a search found.

    Never a list of everyone: the enroller searches by id or display name and
    picks from one page of matches (:meth:`Gallery.find_subjects`).
    """
    state = service_state(request)
    context: dict[str, Any] = {"query": query, "subject": None, "matches": None}
    if subject_id:
        try:
            context["subject"] = await state.call(lambda g: g.get_subject(subject_id))
        except UnknownSubject as error:
            context["error"] = error_context(error)
    if query:
        context["matches"] = await state.call(
            lambda g: g.find_subjects(query, after=after or None, limit=ENROL_MATCHES)
        )
    return context


#: Subjects a search on the enrolment page lists at a time.
ENROL_MATCHES = 10


@router.get("/enrol")
async def enrol_form(
    request: Request,
    subject_id: Annotated[str, Query(max_length=200)] = "",
    q: Annotated[str, Query(max_length=200)] = "",
    after: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """The enrolment form: search a subject (GET), then upload a photo for the one chosen."""
    key = await guard(request, "enroll_photo")
    if isinstance(key, Response):
        return key
    context = await enrol_context(request, subject_id, q, after)
    status = 404 if "error" in context else 200
    return render_page(request, key, "enrol.html", status=status, **context)


@router.post("/enrol")
async def enrol_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    subject_id: Annotated[str, Form(min_length=1, max_length=200)],
    photo: UploadFile,
    crop: Annotated[bool, Form()] = False,
    keep_photo: Annotated[bool, Form()] = False,
) -> Response:
    """Enrol the uploaded photo; show it, its aligned face and every quality check.

    The page stays on the same subject after an enrolment and after a refusal;
    a refused photo is shown again with the reason (and, when its quality was
    too low, with each check's value and limit). ``crop`` says the photo is
    already a face crop (face policy ``"crop"``: no detection); otherwise the
    default face policy reads it. With ``keep_photo`` the photo is kept,
    encrypted under the subject's key, as the reference reviewers compare a
    probe against; it is deleted with the subject. Rate limited per key like the API.
    """
    key = await guard(request, "enroll_photo")
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    await require_single_parts(request, "photo")
    state = service_state(request)
    limited = await spend_token(state, "enroll_photo", key)  # the API's bucket
    if limited is not None:
        chosen = await enrol_context(request, subject_id)
        chosen.pop("error", None)
        return render_page(request, key, "enrol.html", status=429,
                           error=error_context(limited), keep_photo=keep_photo, **chosen)
    data = await photo.read()
    policy: FacePolicy = "crop" if crop else DEFAULT_FACE_POLICY
    context: dict[str, Any] = {"keep_photo": keep_photo}
    try:
        result = await state.use_biometrics(
            key, "enroll_photo",
            lambda g: enroll_photo(g, subject_id, data, actor=key.actor, face_policy=policy,
                                   keep_photo=keep_photo),
            subject_ids=[subject_id],
        )
        context.update(result=result, face=result.face, chip=chip_url(result.face.chip))
        status = 201
    except FacetrustError as error:
        context["error"], status = error_context(error), problem_of(error).status
        if isinstance(error, FaceQualityTooLow) and error.face is not None:
            context.update(face=error.face, chip=chip_url(error.face.chip))
    context["photo"] = await photo_preview(data, state.gallery.pipeline.settings)
    chosen = await enrol_context(request, subject_id)
    chosen.pop("error", None)  # the enrolment's own error says more
    return render_page(request, key, "enrol.html", status=status, **chosen, **context)
