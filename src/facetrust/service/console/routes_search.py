"""Operator pages: verify two photos, identify a photo (reviews: :mod:`.routes_reviews`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import Response

from ...errors import FacetrustError
from ...gallery.checks import MAX_PURPOSE_LENGTH, TEXT_LIMITS
from ...gallery.photos import verify_photos
from ..auth import service_state, spend_token
from ..inputs import require_single_parts, text_bound
from ..problems import problem_of
from ..routes_search import HUMAN_REVIEW_NOTICE
from .access import guard, purpose_form
from .csrf import check_csrf
from .previews import photo_preview
from .rendering import PREFIX, error_context, render_page

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/verify")
async def verify_form(request: Request) -> Response:
    """Show the verify form."""
    return await purpose_form(request, "verify_photos", "verify.html")


@router.post("/verify")
async def verify_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    purpose: Annotated[str, Form(min_length=1, max_length=text_bound(MAX_PURPOSE_LENGTH))],
    case_ref: Annotated[str, Form(min_length=1, max_length=text_bound(TEXT_LIMITS["case_ref"]))],
    image_a: UploadFile,
    image_b: UploadFile,
) -> Response:
    """Compare the two uploaded photos and show the decision beside them; rate limited
    per key like the API."""
    key = await guard(request, "verify_photos")
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    await require_single_parts(request, "image_a", "image_b")
    state = service_state(request)
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes}
    limited = await spend_token(state, "verify_photos", key)  # the API's bucket
    if limited is not None:
        return render_page(request, key, "verify.html", status=429,
                           error=error_context(limited), **context)
    a, b = await image_a.read(), await image_b.read()
    try:
        result = await state.use_biometrics(
            key, "verify_photos",
            lambda g: verify_photos(g, a, b, purpose=purpose, actor=key.actor, case_ref=case_ref),
            purpose=purpose,
        )
        settings = state.gallery.pipeline.settings
        context.update(result=result, photos=(await photo_preview(a, settings),
                                              await photo_preview(b, settings)))
        status = 200
    except FacetrustError as error:
        context["error"], status = error_context(error), problem_of(error).status
    return render_page(request, key, "verify.html", status=status, **context)


@router.get("/identify")
async def identify_form(request: Request) -> Response:
    """Show the identify form."""
    return await purpose_form(request, "identify", "identify.html")


@router.post("/identify")
async def identify_submit(
    request: Request,
    csrf: Annotated[str, Form()],
    purpose: Annotated[str, Form(min_length=1, max_length=text_bound(MAX_PURPOSE_LENGTH))],
    case_ref: Annotated[str, Form(min_length=1, max_length=text_bound(TEXT_LIMITS["case_ref"]))],
    image: UploadFile,
    k: Annotated[int, Form(ge=1, le=50)] = 5,
) -> Response:
    """Search the gallery for the uploaded photo; rate limited per key like the API."""
    key = await guard(request, "identify")
    if isinstance(key, Response):
        return key
    await check_csrf(request, csrf)
    await require_single_parts(request, "image")
    state = service_state(request)
    context: dict[str, Any] = {"purposes": state.gallery.config.purposes,
                               "notice": HUMAN_REVIEW_NOTICE}
    limited = await spend_token(state, "identify", key)
    if limited is not None:
        return render_page(request, key, "identify.html", status=429,
                           error=error_context(limited), **context)
    data = await image.read()
    try:
        result = await state.use_biometrics(
            key, "identify",
            lambda g: g.identify(data, purpose=purpose, actor=key.actor, k=k, case_ref=case_ref),
            purpose=purpose,
        )
        context.update(result=result,
                       photo=await photo_preview(data, state.gallery.pipeline.settings),
                       probe_kept=bool(result.candidates)
                       and state.gallery.config.pending_probe_hours > 0)
        status = 200
    except FacetrustError as error:
        context["error"], status = error_context(error), problem_of(error).status
    return render_page(request, key, "identify.html", status=status, **context)
