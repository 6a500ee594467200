"""Reviewer pages: the review queue, one identification's review page, its photos.

The review page shows the probe with the detected face box beside each
candidate's reference photo (or "No reference photo kept: confirm against an
identity document"), and a confirm and a reject form per candidate. After a
decision the browser is sent back to the same page (POST-redirect-GET), which
shows where the quorum stands ("1 of 2 confirmations; waiting for a second
reviewer", then "Confirmed by A and B"). The photos are separate same-origin
images (allowed by the CSP, no script needed), served ``no-store``; the
gallery audits each view and each refusal.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from ...errors import FacetrustError
from ..auth import service_state
from ..problems import problem_of
from ..routes_reviews import photo_response, reviewer_call
from ..routes_search import HUMAN_REVIEW_NOTICE
from .access import guard
from .csrf import check_csrf
from .rendering import PREFIX, error_context, render_page

__all__ = ["age_text", "router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

DECISIONS = {"confirm": "confirmation", "reject": "rejection"}


def age_text(seconds: int) -> str:
    """A short age for people: "45 s", "12 min", "3 h 5 min", "2 days"."""
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86400} days"


@router.get("/reviews")
async def review_queue_page(
    request: Request,
    after: Annotated[str | None, Query(max_length=300)] = None,
) -> Response:
    """The identifications awaiting a review this operator may give, oldest first."""
    key = await guard(request, "list_review_queue")
    if isinstance(key, Response):
        return key
    context: dict[str, Any] = {"age_text": age_text, "after": after}
    status = 200
    try:
        context["queue"] = await reviewer_call(
            request, lambda g: g.review_queue(reviewer=key.actor, after=after, limit=25)
        )
    except FacetrustError as error:
        context["error"], status = error_context(error), problem_of(error).status
    return render_page(request, key, "reviews.html", status=status, **context)


async def _review_page(
    request: Request, identification_id: str, status: int = 200, **context: Any
) -> Response:
    key = await guard(request, "get_review_case")
    if isinstance(key, Response):
        return key
    try:
        case = await reviewer_call(
            request, lambda g: g.review_case(identification_id, reviewer=key.actor)
        )
    except FacetrustError as error:
        return render_page(request, key, "review.html", status=problem_of(error).status,
                           error=error_context(error), case=None)
    return render_page(
        request, key, "review.html", status=status, case=case, quorum=case.review_quorum,
        age_text=age_text, notice=HUMAN_REVIEW_NOTICE, quote=quote, **context,
    )


@router.get("/reviews/{identification_id}")
async def review_page(
    request: Request,
    identification_id: str,
    recorded: Annotated[str | None, Query(max_length=220)] = None,
) -> Response:
    """One identification: probe beside each candidate's reference, forms and quorum."""
    done = None
    if recorded:
        subject_id, _, decision = recorded.rpartition(":")
        if decision in DECISIONS and subject_id:
            done = {"subject_id": subject_id, "decision": DECISIONS[decision]}
    return await _review_page(request, identification_id, recorded=done)


@router.post("/reviews/{identification_id}")
async def review_submit(
    request: Request,
    identification_id: str,
    csrf: Annotated[str, Form()],
    subject_id: Annotated[str, Form(min_length=1, max_length=200)],
    decision: Annotated[str, Form(pattern="^(confirm|reject)$")],
) -> Response:
    """Record this operator's decision on one candidate, then show the page again."""
    key = await guard(request, "review_candidate")
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    try:
        await service_state(request).use_biometrics(
            key, "review_candidate",
            lambda g: g.review(identification_id, subject_id, reviewer=key.actor,
                               decision=decision),
            subject_ids=[subject_id],
        )
    except FacetrustError as error:
        return await _review_page(request, identification_id, problem_of(error).status,
                                  error=error_context(error))
    query = urlencode({"recorded": f"{subject_id}:{decision}"})
    return RedirectResponse(
        f"/console/reviews/{quote(identification_id, safe='')}?{query}", status_code=303
    )


@router.get("/reviews/{identification_id}/probe.jpg")
async def probe_image(request: Request, identification_id: str) -> Response:
    """The probe with its face box drawn, for a reviewer of a pending identification."""
    key = await guard(request, "get_probe_photo")
    if isinstance(key, Response):
        return key
    shown = await reviewer_call(
        request, lambda g: g.probe_photo(identification_id, reviewer=key.actor)
    )
    return photo_response(shown)


@router.get("/reviews/{identification_id}/reference/{subject_id}.jpg")
async def reference_image(request: Request, identification_id: str, subject_id: str) -> Response:
    """A candidate's enrolled photo, for a reviewer of a pending identification."""
    key = await guard(request, "get_reference_photo")
    if isinstance(key, Response):
        return key
    shown = await reviewer_call(
        request,
        lambda g: g.reference_photo(identification_id, subject_id, reviewer=key.actor),
    )
    return photo_response(shown)
