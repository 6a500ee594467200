"""Public routes: liveness, readiness, metrics and the catalogue of problem types."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from ..gallery import Gallery
from .auth import check_key, service_state
from .problems import Problem, catalogue, problem_responses

router = APIRouter(tags=["health"], responses=problem_responses(503))


@router.get("/healthz", operation_id="health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", operation_id="ready", responses=problem_responses(401, 429))
async def ready(request: Request) -> dict[str, Any]:
    """Readiness: the gallery, its audit head and the face model are usable (503 if not).

    Without a key the answer is only ``{"status": "ready"}``; with any valid key
    it also names the gallery, the model and the audit head's sequence number.
    (The key is optional, so the route is public and reads the header itself.)
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
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return {"status": details["status"]}
    await check_key(request, presented.strip())
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
