"""Enroller routes: subjects, consents, enrolment from an uploaded photo, erasure."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, UploadFile
from pydantic import AwareDatetime, BaseModel, Field, field_validator

from ..gallery.photos import enroll_photo
from .apikeys import ApiKey
from .auth import allow, service_state
from .problems import AUTH_PROBLEMS, IMAGE_PROBLEMS

router = APIRouter(
    prefix="/v1", tags=["subjects"], responses={**AUTH_PROBLEMS, **IMAGE_PROBLEMS}
)

SubjectId = Annotated[str, Path(min_length=1, max_length=200, description="Opaque subject id.")]


class NewSubject(BaseModel):
    subject_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Opaque id; a random one when omitted. Never a name or other personal data.",
    )
    display_name: str | None = Field(default=None, max_length=200)


class NewConsent(BaseModel):
    purposes: list[str] = Field(min_length=1, max_length=20)
    expires_at: AwareDatetime = Field(description="When the consent ends (ISO 8601 with zone).")
    evidence_ref: str = Field(min_length=1, max_length=500, description="The signed form's id.")
    evidence_sha256: str = Field(
        pattern="^[0-9a-fA-F]{64}$", description="SHA-256 of the signed form's file."
    )
    notice_version: str = Field(min_length=1, max_length=100)

    @field_validator("expires_at")
    @classmethod
    def _representable_in_utc(cls, value: AwareDatetime) -> AwareDatetime:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("must be representable in UTC") from None
        return value


class Withdrawal(BaseModel):
    consent_id: str | None = Field(
        default=None, max_length=200, description="One consent; every active one if omitted."
    )
    reason: str = Field(default="withdrawn by the subject", min_length=1, max_length=500)


@router.post("/subjects", operation_id="create_subject", status_code=201)
async def create_subject(
    body: NewSubject, request: Request, key: ApiKey = Depends(allow("create_subject"))  # noqa: B008
) -> dict[str, Any]:
    """Register a subject (no biometric data yet)."""
    state = service_state(request)
    subject = await state.call(
        lambda g: g.add_subject(body.subject_id, display_name=body.display_name, actor=key.actor)
    )
    return subject.to_dict()


@router.get("/subjects", operation_id="list_subjects")
async def list_subjects(
    request: Request, key: ApiKey = Depends(allow("list_subjects"))  # noqa: B008
) -> dict[str, Any]:
    """Every subject not erased, oldest first."""
    subjects = await service_state(request).call(lambda g: g.list_subjects())
    return {"subjects": [s.to_dict() for s in subjects]}


@router.get("/subjects/{subject_id}", operation_id="get_subject")
async def get_subject(
    subject_id: SubjectId, request: Request,
    key: ApiKey = Depends(allow("get_subject")),  # noqa: B008
) -> dict[str, Any]:
    """One subject."""
    subject = await service_state(request).call(lambda g: g.get_subject(subject_id))
    return subject.to_dict()


@router.post("/subjects/{subject_id}/consents", operation_id="grant_consent", status_code=201)
async def grant_consent(
    subject_id: SubjectId, body: NewConsent, request: Request,
    key: ApiKey = Depends(allow("grant_consent")),  # noqa: B008
) -> dict[str, Any]:
    """Record the subject's consent for ``purposes`` until ``expires_at``."""
    consent = await service_state(request).call(
        lambda g: g.grant_consent(
            subject_id,
            body.purposes,
            expires_at=body.expires_at,
            evidence_ref=body.evidence_ref,
            evidence_sha256=body.evidence_sha256,
            notice_version=body.notice_version,
            actor=key.actor,
        )
    )
    return consent.to_dict()


@router.get("/subjects/{subject_id}/consents", operation_id="list_consents")
async def list_consents(
    subject_id: SubjectId, request: Request,
    key: ApiKey = Depends(allow("list_consents")),  # noqa: B008
) -> dict[str, Any]:
    """The subject's consent history, oldest first."""
    consents = await service_state(request).call(lambda g: g.consents(subject_id))
    return {"consents": [c.to_dict() for c in consents]}


@router.post("/subjects/{subject_id}/consents/withdraw", operation_id="withdraw_consent")
async def withdraw_consent(
    subject_id: SubjectId, body: Withdrawal, request: Request,
    key: ApiKey = Depends(allow("withdraw_consent")),  # noqa: B008
) -> dict[str, Any]:
    """Withdraw one consent (or all); with none active left, the biometric data is erased."""
    result = await service_state(request).use_biometrics(
        key, "withdraw_consent",
        lambda g: g.withdraw_consent(
            subject_id, body.consent_id, actor=key.actor, reason=body.reason
        ),
    )
    return result.to_dict()


@router.post("/subjects/{subject_id}/enrolments", operation_id="enroll_photo", status_code=201)
async def enroll(
    subject_id: SubjectId,
    request: Request,
    photo: Annotated[UploadFile, File(description="One photo holding exactly one face.")],
    keep_photo: Annotated[bool, Form(description="Keep the photo, encrypted.")] = False,
    key: ApiKey = Depends(allow("enroll_photo")),  # noqa: B008
) -> dict[str, Any]:
    """Enrol the face of an uploaded photo (needs the subject's active consent).

    The response shows the detected face (box, landmarks) and its quality checks.
    """
    data = await photo.read()
    result = await service_state(request).use_biometrics(
        key, "enroll_photo",
        lambda g: enroll_photo(g, subject_id, data, actor=key.actor, keep_photo=keep_photo),
    )
    return result.to_dict()


@router.delete("/subjects/{subject_id}", operation_id="erase_subject")
async def erase_subject(
    subject_id: SubjectId,
    request: Request,
    reason: Annotated[str, Query(min_length=1, max_length=500)] = "erasure requested",
    key: ApiKey = Depends(allow("erase_subject")),  # noqa: B008
) -> dict[str, Any]:
    """Erase the subject for good (crypto-shredding); the id is never reused."""
    result = await service_state(request).use_biometrics(
        key, "erase_subject", lambda g: g.forget(subject_id, actor=key.actor, reason=reason)
    )
    return result.to_dict()
