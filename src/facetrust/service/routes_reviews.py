"""Reviewer routes: the review queue, where one identification's review stands,
and the photos a reviewer compares (the probe with its face box, each
candidate's reference photo).

The gallery gives the photos only to a reviewer who may review the
identification (not the one who searched, unless the policy allows it), only
for its candidates and only while it is pending, and audits each view and
each refusal itself (``reference.view``, ``pending-probe.view``, ``.refused``).
Photos are JPEG copies for display, sent (as every answer) with
``Cache-Control: no-store`` (:mod:`.headers`).
Decisions are posted to ``/v1/identifications/{id}/reviews`` (:mod:`.routes_search`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ..gallery import Gallery, ProbePhoto, ReferencePhoto
from ..gallery.checks import check_subject_id
from ..overlay import display_copy
from .apikeys import ApiKey
from .auth import allow, service_state
from .inputs import SubjectIdPath, round_distances
from .problems import AUTH_PROBLEMS, Problem, problem_responses
from .refusals import mark_audited

__all__ = ["photo_response", "reviewer_call", "router"]

T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["review"], responses={**AUTH_PROBLEMS})

IdentificationId = Annotated[str, Path(min_length=1, max_length=200)]
JPEG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "A JPEG copy for display."}
}


async def reviewer_call(request: Request, fn: Callable[[Gallery], T]) -> T:
    """Run ``fn(gallery)`` under the gallery lock. The gallery audits the refusals it
    records (with the service's fields, see :meth:`ServiceState.call`); one it raises
    without an event (a bad page cursor) is the service's ``service.refused``."""
    return await service_state(request).call(fn)


def photo_response(shown: ProbePhoto | ReferencePhoto) -> Response:
    """The photo as a JPEG copy (the probe with its face box drawn); like every answer
    it is ``no-store`` (:mod:`.headers`).

    Raises
    ------
    Problem
        ``not-found`` with the gallery's message when no photo is kept.
    """
    if shown.photo is None:
        mark_audited()  # the gallery audited the view
        raise Problem("not-found", shown.message or "No photo is kept.")
    box = shown.box if isinstance(shown, ProbePhoto) else None
    return Response(display_copy(shown.photo, box), media_type="image/jpeg")


@router.get("/reviews", operation_id="list_review_queue", responses=problem_responses(422))
async def list_review_queue(
    request: Request,
    after: Annotated[str | None, Query(max_length=300, description="next_after of the "
                                       "previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 25,
    key: ApiKey = Depends(allow("list_review_queue")),  # noqa: B008
) -> dict[str, Any]:
    """The identifications awaiting a review this key may give, oldest first.

    Leaves out this key's own searches (unless the policy lets searchers
    review) and those it has already reviewed. Each case lists its purpose,
    case reference, age and the reviews so far.
    """
    queue = await reviewer_call(
        request, lambda g: g.review_queue(reviewer=key.actor, after=after, limit=limit)
    )
    return round_distances(queue.to_dict())


@router.get(
    "/identifications/{identification_id}", operation_id="get_review_case",
    responses=problem_responses(404),
)
async def get_review_case(
    request: Request,
    identification_id: IdentificationId,
    key: ApiKey = Depends(allow("get_review_case")),  # noqa: B008
) -> dict[str, Any]:
    """Where the review of one identification stands, per candidate, in plain English.

    ``status`` is ``pending``, ``confirmed``, ``rejected``, ``no-candidate`` or
    ``closed`` (every candidate left undecided is no longer eligible: consent to
    the purpose withdrawn or expired, subject erased, retention ended; ``reason``
    says so). Each candidate's ``status`` is ``pending``, ``confirmed``,
    ``rejected`` or ``ineligible`` (with ``ineligible_reason``), and its
    ``summary`` says it in a sentence.
    """
    case = await reviewer_call(
        request, lambda g: g.review_case(identification_id, reviewer=key.actor)
    )
    return round_distances(case.to_dict())


@router.get(
    "/identifications/{identification_id}/probe", operation_id="get_probe_photo",
    response_class=Response, responses={**JPEG, **problem_responses(404, 409)},
)
async def get_probe_photo(
    request: Request,
    identification_id: IdentificationId,
    key: ApiKey = Depends(allow("get_probe_photo")),  # noqa: B008
) -> Response:
    """The searched photo with the detected face box drawn, while the identification
    awaits review (404 once it is no longer kept)."""
    shown = await reviewer_call(
        request, lambda g: g.probe_photo(identification_id, reviewer=key.actor)
    )
    return photo_response(shown)


@router.get(
    "/identifications/{identification_id}/candidates/{subject_id}/reference",
    operation_id="get_reference_photo",
    response_class=Response, responses={**JPEG, **problem_responses(404, 409)},
)
async def get_reference_photo(
    request: Request,
    identification_id: IdentificationId,
    subject_id: SubjectIdPath,
    key: ApiKey = Depends(allow("get_reference_photo")),  # noqa: B008
) -> Response:
    """A candidate's enrolled photo, decrypted for display only (404 with "No reference
    photo kept: confirm against an identity document" when photos were not kept)."""
    check_subject_id(subject_id)
    shown = await reviewer_call(
        request,
        lambda g: g.reference_photo(identification_id, subject_id, reviewer=key.actor),
    )
    return photo_response(shown)
