"""Auditor pages: the audit trail with its chain check, and the evaluation reports."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from ...gallery import Gallery
from ..auth import service_state
from ..reports import REPORT_TYPES, report_files
from .access import guard
from .rendering import SECURITY_HEADERS, render_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/audit")
async def audit_page(request: Request, kind: str = "", subject: str = "") -> Response:
    """The chain's verification and its latest 200 events (newest first), filtered."""
    key = await guard(request, "list_audit_events")
    if isinstance(key, Response):
        return key

    def read(gallery: Gallery) -> tuple[Any, list[Any]]:
        report = gallery.audit.verify()
        events = list(gallery.audit.events(kind=kind or None, subject=subject or None))
        return report, events[-200:][::-1]

    report, events = await service_state(request).call(read)
    return render_page(request, key, "audit.html", report=report, events=events, kind=kind,
                       subject=subject)


@router.get("/reports")
async def reports_page(request: Request) -> Response:
    """List the evaluation reports in the service's report folder."""
    key = await guard(request, "list_reports")
    if isinstance(key, Response):
        return key
    reports = report_files(service_state(request).reports_dir)
    return render_page(request, key, "reports.html", reports=reports)


@router.get("/reports/{name}")
async def report_page(request: Request, name: str) -> Response:
    """One report: JSON rendered in a page, other files served sandboxed."""
    key = await guard(request, "get_report")
    if isinstance(key, Response):
        return key
    for path in report_files(service_state(request).reports_dir):
        if path.name != name:
            continue
        if path.suffix == ".json":
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                content = None
            return render_page(request, key, "report.html", name=name, content=content,
                               text=json.dumps(content, indent=2) if content is not None else "")
        response = FileResponse(path, media_type=REPORT_TYPES[path.suffix])
        response.headers.update({**SECURITY_HEADERS, "Content-Security-Policy": "sandbox"})
        return response
    return render_page(request, key, "forbidden.html", status=404, operation=f"report {name}")
