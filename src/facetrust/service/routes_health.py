"""Public routes: liveness, readiness, metrics and the catalogue of problem types."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials

from ..gallery import Gallery
from .auth import bearer, check_key, service_state
from .problems import Problem, catalogue, problem_responses

router = APIRouter(tags=["health"], responses=problem_responses(503))


@router.get("/healthz", operation_id="health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="ready")
async def ready(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
) -> dict[str, Any]:
    """Readiness: the gallery, its audit head and the face model are usable (503 if not).

    Without a key the answer is only ``{"status": "ready"}``; with any valid key
    it also names the gallery, the model and the audit head's sequence number.
    """
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise Problem("not-ready", "The service is still starting.")

    def check(gallery: Gallery) -> dict[str, Any]:
        head = gallery.audit.head()
        return {
            "status": "ready",
            "gallery_id": gallery.gallery_id,
            "model_id": gallery.pipeline.model_id,
            "audit_head_seq": head.seq,
        }

    details = await service_state(request).call(check)
    if credentials is None:
        return {"status": details["status"]}
    await check_key(request, credentials.credentials)
    return details


@router.get(
    "/metrics", operation_id="metrics", response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text-format metrics (no personal data)."""
    text = service_state(request).metrics.render()
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


@router.get("/problems", operation_id="problem_types")
async def problem_types() -> dict[str, Any]:
    """Every problem ``type`` the service answers errors with (RFC 9457)."""
    return {"problems": catalogue()}
