"""Enroller routes: subjects, consents, enrolment from an uploaded photo, erasure.

Every POST here takes an ``Idempotency-Key`` header (see
:mod:`facetrust.service.idempotency`): a retry with the same key answers the
first response and changes nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    File,
    Form,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.formparsers import MultiPartException

from ..gallery.checks import MAX_DISPLAY_NAME_LENGTH, TEXT_LIMITS, check_subject_id
from ..gallery.photos import enroll_photo
from ..gallery.subjects import MAX_PAGE
from ..pipeline import DEFAULT_FACE_POLICY, FACE_POLICY_HELP
from ..times import parse_time, to_utc
from .apikeys import ApiKey
from .auth import allow, service_state
from .idempotency import IdempotencyKey, respond
from .inputs import (
    SUBJECT_ID_HELP,
    SubjectIdField,
    SubjectIdPath,
    parse_face,
    require_single_parts,
    round_distances,
    text_bound,
    text_schema,
)
from .problems import AUTH_PROBLEMS, IMAGE_PROBLEMS, Problem

router = APIRouter(
    prefix="/v1", tags=["subjects"], responses={**AUTH_PROBLEMS, **IMAGE_PROBLEMS}
)

SubjectId = SubjectIdPath


class NewSubject(BaseModel):
    subject_id: SubjectIdField | None = Field(
        default=None, description=f"{SUBJECT_ID_HELP} A random one when omitted.",
    )
    display_name: Annotated[str, Field(
        max_length=text_bound(MAX_DISPLAY_NAME_LENGTH),
        json_schema_extra=text_schema(MAX_DISPLAY_NAME_LENGTH),
    )] | None = None


class NewConsent(BaseModel):
    purposes: list[str] = Field(min_length=1, max_length=20)
    expires_at: AwareDatetime = Field(description=(
        "When the consent ends: ISO 8601 text with its zone (2027-01-31T00:00:00Z, "
        "2027-01-31T09:30:00+02:00), read as the CLI and the console read it; a date or "
        "a time without a zone, or a number, is refused."
    ))
    evidence_ref: str = Field(min_length=1, max_length=text_bound(TEXT_LIMITS["evidence_ref"]),
                              json_schema_extra=text_schema(TEXT_LIMITS["evidence_ref"]),
                              description="The signed form's id.")
    # the pattern is the library's check (422 invalid-parameter), which also takes
    # the digest with outer spaces, as the CLI, the console and a batch CSV do
    evidence_sha256: str = Field(
        max_length=200, json_schema_extra={"pattern": "^[0-9a-fA-F]{64}$", "maxLength": 64},
        description="SHA-256 of the signed form's file.",
    )
    notice_version: str = Field(
        min_length=1, max_length=text_bound(TEXT_LIMITS["notice_version"]),
        json_schema_extra=text_schema(TEXT_LIMITS["notice_version"]),
    )

    @field_validator("expires_at", mode="before")
    @classmethod
    def _read_as_everywhere(cls, value: Any) -> datetime:
        # the library's one parser, never pydantic's own: it would read a number
        # (or "1900000000") as Unix seconds, a meaning no other entry point has
        return to_utc(parse_time(value, "expires_at", zone_required=True), "expires_at")


#: The multipart form of a consent: the evidence file itself instead of its SHA-256.
_CONSENT_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["purposes", "expires_at", "evidence_ref", "evidence", "notice_version"],
    "properties": {
        "purposes": {
            "type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 20,
            "description": "One form field per purpose.",
        },
        "expires_at": {"type": "string", "format": "date-time"},
        "evidence_ref": {"type": "string", "minLength": 1, "maxLength": 500},
        "evidence": {
            "type": "string", "format": "binary",
            "description": "The signed form's file: hashed (SHA-256), never stored.",
        },
        "notice_version": {"type": "string", "minLength": 1, "maxLength": 100},
    },
}
_CONSENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": NewConsent.model_json_schema()},
            "multipart/form-data": {"schema": _CONSENT_FORM_SCHEMA},
        },
    }
}


async def read_consent(request: Request) -> tuple[NewConsent, bool]:
    """The consent a request sends as JSON, or as a form with the evidence file.

    Returns the consent and whether its SHA-256 was computed here from an
    uploaded file (the file's bytes are read, hashed and dropped).
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form()
        except MultiPartException:
            raise Problem(
                "bad-request", "The multipart body cannot be read. Send a valid form."
            ) from None
        await require_single_parts(request, "expires_at", "evidence_ref", "notice_version")
        evidence = form.getlist("evidence")
        if len(evidence) != 1 or not isinstance(evidence[0], StarletteUpload):
            raise RequestValidationError([{
                "type": "missing", "loc": ("body", "evidence"),
                "msg": "Send the signed form's file as exactly one 'evidence' part "
                "(or send JSON with 'evidence_sha256').",
                "input": None,
            }])
        digest = hashlib.sha256(await evidence[0].read()).hexdigest()
        raw: Any = {
            "purposes": [p for p in form.getlist("purposes") if isinstance(p, str)],
            "expires_at": form.get("expires_at"),
            "evidence_ref": form.get("evidence_ref"),
            "evidence_sha256": digest,
            "notice_version": form.get("notice_version"),
        }
        from_file = True
    else:
        try:
            raw = await request.json()
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            raise RequestValidationError([{
                "type": "json_invalid", "loc": ("body",),
                "msg": "The body must be JSON (or a multipart form with an 'evidence' file).",
                "input": None,
            }]) from None
        from_file = False
    try:
        return NewConsent.model_validate(raw), from_file
    except ValidationError as error:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
        ) from None


class Withdrawal(BaseModel):
    consent_id: str | None = Field(
        default=None, max_length=200, description="One consent; every active one if omitted."
    )
    reason: str = Field(default="withdrawn by the subject", min_length=1,
                        max_length=text_bound(TEXT_LIMITS["reason"]),
                        json_schema_extra=text_schema(TEXT_LIMITS["reason"]))


@router.post("/subjects", operation_id="create_subject", status_code=201)
async def create_subject(
    body: NewSubject, request: Request, response: Response,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Depends(allow("create_subject")),  # noqa: B008
) -> dict[str, Any]:
    """Register a subject (no biometric data yet)."""
    return await respond(
        request, response, key, "create_subject",
        lambda g: g.add_subject(body.subject_id, display_name=body.display_name, actor=key.actor),
        idempotency_key=idempotency_key, fields=body.model_dump(mode="json"), status=201,
        audited=False,
    )


@router.get("/subjects", operation_id="list_subjects")
async def list_subjects(
    request: Request,
    q: Annotated[str, Query(
        max_length=200,
        description="Keep subjects whose id or display name contains this, ignoring case.",
    )] = "",
    after: Annotated[str, Query(
        max_length=200, description="The previous page's next_after; omit for the first page.",
    )] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Most subjects on the page.")] = 50,
    key: ApiKey = Depends(allow("list_subjects")),  # noqa: B008
) -> dict[str, Any]:
    """One page of the subjects not erased, by increasing id, optionally searched.

    Keyset paging: pass the answer's ``next_after`` as ``after`` for the next
    page; it is null on the last page.
    """
    page = await service_state(request).call(
        lambda g: g.find_subjects(q or None, after=after or None, limit=limit)
    )
    return page.to_dict()


@router.get("/subjects/{subject_id}", operation_id="get_subject")
async def get_subject(
    subject_id: SubjectId, request: Request,
    key: ApiKey = Depends(allow("get_subject")),  # noqa: B008
) -> dict[str, Any]:
    """One subject, with the number of photos kept; each view is audited (``subject.view``).

    A subject's record is personal data, so reading it leaves an audit event
    naming the caller's key, as the console's subject page does.
    """
    check_subject_id(subject_id)
    overview = await service_state(request).call(
        lambda g: g.view_subject(subject_id, actor=key.actor)
    )
    return {**overview.subject.to_dict(), "photos_kept": overview.photos_kept,
            "audit_seq": overview.audit_seq}


@router.post(
    "/subjects/{subject_id}/consents", operation_id="grant_consent", status_code=201,
    openapi_extra=_CONSENT_BODY,
)
async def grant_consent(
    subject_id: SubjectId, request: Request, response: Response,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Depends(allow("grant_consent")),  # noqa: B008
) -> dict[str, Any]:
    """Record the subject's consent for ``purposes`` until ``expires_at``.

    Send JSON with the signed form's ``evidence_sha256``, or a multipart form
    with the form's file itself as ``evidence`` (one ``purposes`` field per
    purpose): the service hashes the file and never stores it.
    """
    check_subject_id(subject_id)
    body, _ = await read_consent(request)
    return await respond(
        request, response, key, "grant_consent",
        lambda g: g.grant_consent(
            subject_id,
            body.purposes,
            expires_at=body.expires_at,
            evidence_ref=body.evidence_ref,
            evidence_sha256=body.evidence_sha256,
            notice_version=body.notice_version,
            actor=key.actor,
        ),
        idempotency_key=idempotency_key, fields=body.model_dump(mode="json"), status=201,
        subject_id=subject_id, audited=False,
    )


@router.get("/subjects/{subject_id}/consents", operation_id="list_consents")
async def list_consents(
    subject_id: SubjectId, request: Request,
    key: ApiKey = Depends(allow("list_consents")),  # noqa: B008
) -> dict[str, Any]:
    """The subject's consent history, oldest first; each view is audited (``subject.view``)."""
    check_subject_id(subject_id)
    overview = await service_state(request).call(
        lambda g: g.view_subject(subject_id, actor=key.actor)
    )
    return {"consents": [c.to_dict() for c in overview.consents], "audit_seq": overview.audit_seq}


@router.post("/subjects/{subject_id}/consents/withdraw", operation_id="withdraw_consent")
async def withdraw_consent(
    subject_id: SubjectId, body: Withdrawal, request: Request, response: Response,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Depends(allow("withdraw_consent")),  # noqa: B008
) -> dict[str, Any]:
    """Withdraw one consent (or all); with none active left, the biometric data is erased."""
    check_subject_id(subject_id)
    return await respond(
        request, response, key, "withdraw_consent",
        lambda g: g.withdraw_consent(
            subject_id, body.consent_id, actor=key.actor, reason=body.reason
        ),
        idempotency_key=idempotency_key, fields=body.model_dump(mode="json"), status=200,
        subject_id=subject_id, atomic=False,  # an erasure commits in steps of its own
    )


@router.post("/subjects/{subject_id}/enrolments", operation_id="enroll_photo", status_code=201)
async def enroll(
    subject_id: SubjectId,
    request: Request,
    response: Response,
    photo: Annotated[UploadFile, File(description="One photo holding exactly one face.")],
    keep_photo: Annotated[bool, Form(description="Keep the photo, encrypted.")] = False,
    face: Annotated[
        str,
        Form(
            max_length=10,
            description=FACE_POLICY_HELP,
        ),
    ] = str(DEFAULT_FACE_POLICY),
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Depends(allow("enroll_photo")),  # noqa: B008
) -> dict[str, Any]:
    """Enrol the face of an uploaded photo (needs the subject's active consent).

    The response shows the detected face (box, landmarks) and its quality checks.
    """
    check_subject_id(subject_id)
    await require_single_parts(request, "photo", "keep_photo", "face")
    policy = parse_face(face)
    data = await photo.read()
    result = await respond(
        request, response, key, "enroll_photo",
        lambda g: enroll_photo(
            g, subject_id, data, actor=key.actor, keep_photo=keep_photo, face_policy=policy
        ),
        idempotency_key=idempotency_key, status=201, subject_id=subject_id, biometric=True,
        fields={
            "photo_sha256": hashlib.sha256(data).hexdigest(),
            "keep_photo": keep_photo,
            "face": face,
        },
    )
    return round_distances(result)


@router.delete("/subjects/{subject_id}", operation_id="erase_subject")
async def erase_subject(
    subject_id: SubjectId,
    request: Request,
    reason: Annotated[str, Query(
        min_length=1, max_length=text_bound(TEXT_LIMITS["reason"]),
        json_schema_extra=text_schema(TEXT_LIMITS["reason"]),
    )] = (
        "erasure requested"
    ),
    key: ApiKey = Depends(allow("erase_subject")),  # noqa: B008
) -> dict[str, Any]:
    """Erase the subject for good (crypto-shredding); the id is never reused."""
    check_subject_id(subject_id)
    result = await service_state(request).use_biometrics(
        key, "erase_subject", lambda g: g.forget(subject_id, actor=key.actor, reason=reason)
    )
    return result.to_dict()
