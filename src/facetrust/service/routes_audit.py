"""Auditor routes: the audit chain, its events, and the evaluation reports (read-only)."""

from __future__ import annotations

import io
import itertools
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from ..gallery import Gallery
from ..times import parse_time
from .apikeys import ApiKey
from .auth import allow, service_state
from .problems import AUTH_PROBLEMS, Problem, problem_responses
from .reports import REPORT_TYPES, report_file, report_files

router = APIRouter(
    prefix="/v1", tags=["audit"], responses={**AUTH_PROBLEMS, **problem_responses(404)}
)


Text = Annotated[str | None, Query(max_length=200)]
Moment = Annotated[
    str | None,
    Query(max_length=40, description="ISO 8601 date or time; without a zone it is UTC "
          "(2026-01-01 is midnight UTC)."),
]


def _filters(
    subject: Text = None, actor: Text = None, purpose: Text = None, kind: Text = None,
    since: Moment = None, until: Moment = None,
) -> dict[str, Any]:
    # One parser for every entry point: dates and naive times are UTC (as in the CLI).
    return {"subject": subject, "actor": actor, "purpose": purpose, "kind": kind,
            "since": parse_time(since, "since") if since else None,
            "until": parse_time(until, "until") if until else None}


@router.get("/audit/verify", operation_id="verify_audit_chain")
async def verify_chain(
    request: Request,
    expect_seq: Annotated[
        int | None, Query(ge=0, le=2**62, description="Anchored head: seq.")
    ] = None,
    expect_mac: Annotated[
        str | None, Query(pattern="^[0-9a-f]{64}$", description="Anchored head: MAC.")
    ] = None,
    key: ApiKey = Depends(allow("verify_audit_chain")),  # noqa: B008
) -> dict[str, Any]:
    """Check every event of the hash chain (and an anchored head, if given).

    The anchored head is the pair ``expect_seq`` and ``expect_mac``; one without
    the other is refused (400) rather than silently checking less than asked.
    """
    if (expect_seq is None) != (expect_mac is None):
        raise Problem(
            "bad-request",
            "An anchored head is 'expect_seq' and 'expect_mac' together (both from "
            "GET /v1/audit/head); send both, or neither to check the chain alone.",
        )
    expect = (expect_seq, expect_mac) if expect_seq is not None and expect_mac else None
    report = await service_state(request).call(lambda g: g.audit.verify(expect))
    return report.to_dict()


@router.get("/audit/head", operation_id="get_audit_head")
async def audit_head(
    request: Request, key: ApiKey = Depends(allow("get_audit_head"))  # noqa: B008
) -> dict[str, Any]:
    """The keyed head checkpoint: anchor ``seq`` and ``mac`` somewhere append-only."""
    head = await service_state(request).call(lambda g: g.audit.head())
    return {"seq": head.seq, "mac": head.mac}


@router.get("/audit/events", operation_id="list_audit_events")
async def audit_events(
    request: Request,
    filters: dict[str, Any] = Depends(_filters),  # noqa: B008
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    key: ApiKey = Depends(allow("list_audit_events")),  # noqa: B008
) -> dict[str, Any]:
    """Events in order, filtered; ``next_offset`` is null on the last page."""

    def page(gallery: Gallery) -> list[dict[str, Any]]:
        chosen = itertools.islice(gallery.audit.events(**filters), offset, offset + limit + 1)
        return [event.to_dict() for event in chosen]

    events = await service_state(request).call(page)
    more = len(events) > limit
    return {"events": events[:limit], "offset": offset,
            "next_offset": offset + limit if more else None}


@router.get(
    "/audit/export", operation_id="export_audit_events",
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def audit_export(
    request: Request,
    filters: dict[str, Any] = Depends(_filters),  # noqa: B008
    key: ApiKey = Depends(allow("export_audit_events")),  # noqa: B008
) -> Response:
    """Every matching event as JSON lines (one event per line, oldest first)."""

    def export(gallery: Gallery) -> str:
        buffer = io.StringIO()
        gallery.audit.export(buffer, **filters)
        return buffer.getvalue()

    text = await service_state(request).call(export)
    return Response(text, media_type="application/x-ndjson")


@router.get("/reports", operation_id="list_reports")
async def list_reports(
    request: Request, key: ApiKey = Depends(allow("list_reports"))  # noqa: B008
) -> dict[str, Any]:
    """The evaluation reports in the service's report folder."""
    folder = service_state(request).reports_dir
    return {
        "reports": [
            {"name": p.name, "bytes": p.stat().st_size, "media_type": REPORT_TYPES[p.suffix]}
            for p in report_files(folder)
        ]
    }


@router.get(
    "/reports/{name}", operation_id="get_report",
    responses={200: {"content": {t: {} for t in REPORT_TYPES.values()}}},
)
async def get_report(
    name: str, request: Request, key: ApiKey = Depends(allow("get_report"))  # noqa: B008
) -> FileResponse:
    """One evaluation report, as stored."""
    path = report_file(service_state(request).reports_dir, name)
    if path is None:
        raise Problem("not-found", f"No report named {name[:200]!r}. List them at /v1/reports.")
    return FileResponse(path, media_type=REPORT_TYPES[path.suffix])
