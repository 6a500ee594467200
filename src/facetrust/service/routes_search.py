"""Operator routes: 1:1 verification, 1:N identification and the review of candidates.

Every one states its purpose and a case reference; identification and
verification against an enrolled subject are rate-limited per key; distances
in responses are rounded to 4 digits; and candidates are never an
identification until human reviewers confirm them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Path, Request, Response, UploadFile
from pydantic import BaseModel, Field

from ..gallery.checks import MAX_PURPOSE_LENGTH, TEXT_LIMITS, check_subject_id
from ..gallery.photos import verify_photos
from ..pipeline import DEFAULT_FACE_POLICY, FACE_POLICY_HELP
from .apikeys import ApiKey
from .auth import allow, service_state
from .idempotency import IdempotencyKey, respond
from .inputs import (
    SubjectIdField,
    SubjectIdPath,
    parse_face,
    require_single_parts,
    round_distances,
    text_bound,
    text_schema,
)
from .problems import AUTH_PROBLEMS, IMAGE_PROBLEMS, problem_responses

router = APIRouter(
    prefix="/v1", tags=["search"],
    responses={**AUTH_PROBLEMS, **IMAGE_PROBLEMS, **problem_responses(429)},
)

Purpose = Annotated[
    str, Form(min_length=1, max_length=text_bound(MAX_PURPOSE_LENGTH),
              json_schema_extra=text_schema(MAX_PURPOSE_LENGTH),
              description="One of the gallery's purposes.")
]
CaseRef = Annotated[
    str, Form(min_length=1, max_length=text_bound(TEXT_LIMITS["case_ref"]),
              json_schema_extra=text_schema(TEXT_LIMITS["case_ref"]),
              description="The case or ticket this belongs to.")
]
Image = Annotated[UploadFile, File(description="A photo holding exactly one face.")]
Face = Annotated[
    str,
    Form(
        max_length=10,
        description=FACE_POLICY_HELP,
    ),
]

#: Form fields a search takes once: a repeated one is refused (422), never read as
#: its last copy (a proxy or client that appends a field must not change the purpose).
_SINGLE_FIELDS = ("purpose", "case_ref", "face")

HUMAN_REVIEW_NOTICE = (
    "Candidates are not an identification: each requires confirmation by human reviewers "
    "before anyone acts on it."
)


@router.post("/verify", operation_id="verify_photos")
async def verify_two_photos(
    request: Request,
    image_a: Image,
    image_b: Image,
    purpose: Purpose,
    case_ref: CaseRef,
    face: Face = str(DEFAULT_FACE_POLICY),
    key: ApiKey = Depends(allow("verify_photos")),  # noqa: B008
) -> dict[str, Any]:
    """Do two photos show the same person (1:1)? Distance: lower is more similar."""
    await require_single_parts(request, "image_a", "image_b", *_SINGLE_FIELDS)
    policy = parse_face(face)
    a, b = await image_a.read(), await image_b.read()
    result = await service_state(request).use_biometrics(
        key, "verify_photos",
        lambda g: verify_photos(g, a, b, purpose=purpose, actor=key.actor, case_ref=case_ref,
                                face_policy=policy),
        purpose=purpose,
    )
    return round_distances(result.to_dict())


@router.post("/subjects/{subject_id}/verify", operation_id="verify_subject")
async def verify_subject(
    request: Request,
    subject_id: SubjectIdPath,
    image: Image,
    purpose: Purpose,
    case_ref: CaseRef,
    face: Face = str(DEFAULT_FACE_POLICY),
    key: ApiKey = Depends(allow("verify_subject")),  # noqa: B008
) -> dict[str, Any]:
    """Is the person in the photo this enrolled subject (1:1, consented purpose)?

    Rate-limited per key like identification; needs a case reference.
    """
    check_subject_id(subject_id)
    await require_single_parts(request, "image", *_SINGLE_FIELDS)
    policy = parse_face(face)
    data = await image.read()
    result = await service_state(request).use_biometrics(
        key, "verify_subject",
        lambda g: g.verify_subject(data, subject_id, purpose=purpose, actor=key.actor,
                                   case_ref=case_ref, face_policy=policy),
        purpose=purpose, subject_ids=[subject_id],
    )
    return round_distances(result.to_dict())


@router.post("/identify", operation_id="identify")
async def identify(
    request: Request,
    image: Image,
    purpose: Purpose,
    case_ref: CaseRef,
    k: Annotated[int, Form(ge=1, le=50, description="Most candidates to return.")] = 5,
    face: Face = str(DEFAULT_FACE_POLICY),
    key: ApiKey = Depends(allow("identify")),  # noqa: B008
) -> dict[str, Any]:
    """Search the gallery (1:N) among subjects who consented to ``purpose``.

    Returns ranked candidates (distance, lower is more similar) awaiting human review.
    Rate-limited per key. A form that repeats a field (two ``image`` or ``purpose``
    parts) is refused (422).
    """
    await require_single_parts(request, "image", "k", *_SINGLE_FIELDS)
    policy = parse_face(face)
    data = await image.read()
    result = await service_state(request).use_biometrics(
        key, "identify",
        lambda g: g.identify(data, purpose=purpose, actor=key.actor, k=k, case_ref=case_ref,
                             face_policy=policy),
        purpose=purpose,
    )
    return {**round_distances(result.to_dict()), "notice": HUMAN_REVIEW_NOTICE}


class Review(BaseModel):
    subject_id: SubjectIdField
    decision: Literal["confirm", "reject"] = "confirm"
    note: Annotated[str, Field(max_length=text_bound(TEXT_LIMITS["note"]),
                               json_schema_extra=text_schema(TEXT_LIMITS["note"]))] | None = None


@router.post("/identifications/{identification_id}/reviews", operation_id="review_candidate")
async def review_candidate(
    request: Request,
    identification_id: Annotated[str, Path(min_length=1, max_length=200)],
    body: Review,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    key: ApiKey = Depends(allow("review_candidate")),  # noqa: B008
) -> dict[str, Any]:
    """Record this key's review decision on one candidate (one key = one reviewer).

    With an ``Idempotency-Key``, a retry answers the first decision's status
    instead of 409 "already reviewed". A decision on a candidate no longer
    eligible, or on an identification closed because none is, is refused with
    409 ``review-closed`` saying why.
    """
    result = await respond(
        request, response, key, "review_candidate",
        lambda g: g.review(
            identification_id, body.subject_id, reviewer=key.actor,
            decision=body.decision, note=body.note,
        ),
        idempotency_key=idempotency_key, fields=body.model_dump(mode="json"), status=200,
        subject_id=body.subject_id,
    )
    return round_distances(result)
