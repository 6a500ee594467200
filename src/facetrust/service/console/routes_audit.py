"""Auditor pages: the audit trail with its chain check, and the evaluation reports.

The trail is paged by keyset over the sequence number (``before`` / ``after``,
never an offset, so a page stays put while events are appended), filtered by
time range, actor, kind, subject and purpose, and the filtered range downloads
as JSON lines, as ``GET /v1/audit/export`` gives it (not audited, like that route).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from ...audit import AuditEvent, AuditReport
from ...errors import InvalidParameter
from ...gallery import Gallery
from ...text import is_whole_number
from ...times import parse_time
from ..apikeys import ApiKey
from ..auth import service_state
from ..reports import REPORT_TYPES, report_files
from .access import guard
from .rendering import PREFIX, error_context, render_page

__all__ = ["router"]

router = APIRouter(prefix=PREFIX, include_in_schema=False)

#: Events per page unless the auditor asks for another number (1 to PAGE_MAX).
PAGE_SIZE = 50
PAGE_MAX = 500
TEXT_FILTERS = ("kind", "actor", "subject", "purpose")


@dataclass(frozen=True)
class TrailQuery:
    """The audit page's filters and page position, as typed in the form (strings)."""

    kind: str = ""
    actor: str = ""
    subject: str = ""
    purpose: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def of(cls, request: Request) -> TrailQuery:
        """The filters of ``request``'s query string (missing ones empty)."""
        params = request.query_params
        return cls(**{name: params.get(name, "").strip()[:200] for name in (
            *TEXT_FILTERS, "since", "until")})

    def filters(self) -> dict[str, Any]:
        """Keyword filters of :meth:`AuditLog.events`; InvalidParameter for a bad time."""
        return {
            **{name: getattr(self, name) or None for name in TEXT_FILTERS},
            "since": parse_time(self.since, "from") if self.since else None,
            "until": parse_time(self.until, "until") if self.until else None,
        }

    def query(self, **extra: int) -> str:
        """The query string of these filters (only those set) and ``extra``."""
        pairs = {n: getattr(self, n) for n in (*TEXT_FILTERS, "since", "until")}
        return urlencode({**{n: v for n, v in pairs.items() if v}, **extra})


def whole_number(request: Request, name: str, low: int, high: int) -> int | None:
    """The query parameter ``name`` as an int in [low, high]; None when absent."""
    text = request.query_params.get(name, "").strip()
    if not text:
        return None
    if not is_whole_number(text) or not low <= int(text) <= high:
        raise InvalidParameter(
            f"The '{name}' parameter must be a whole number from {low} to {high}. "
            f"Got {text[:40]!r}; follow the page links or clear it."
        )
    return int(text)


@dataclass(frozen=True)
class TrailPage:
    """One page of the trail, newest first, and whether there are pages around it."""

    report: AuditReport
    events: list[AuditEvent]
    kinds: list[str]
    has_newer: bool
    has_older: bool


def read_page(
    gallery: Gallery, filters: dict[str, Any], before: int | None, after: int | None, limit: int
) -> TrailPage:
    """The chain check and the page of ``limit`` events before or after a sequence number."""
    audit = gallery.audit
    report = audit.verify()
    kinds = sorted({event.kind for event in audit.events()})
    if after is not None:
        events = list(audit.events(after_seq=after, limit=limit + 1, **filters))
        has_newer = len(events) > limit
        events = events[:limit][::-1]
        bound = events[-1].seq if events else after + 1
        has_older = next(audit.events(before_seq=bound, limit=1, **filters), None) is not None
    else:
        events = list(audit.events(before_seq=before, limit=limit + 1, newest_first=True,
                                   **filters))
        has_older = len(events) > limit
        events = events[:limit]
        bound = events[0].seq if events else (before or 1) - 1
        has_newer = before is not None and next(
            audit.events(after_seq=bound, limit=1, **filters), None) is not None
    return TrailPage(report, events, kinds, has_newer, has_older)


@router.get("/audit")
async def audit_page(request: Request) -> Response:
    """The chain's verification and one page of events (newest first), filtered."""
    key = await guard(request, "list_audit_events")
    if isinstance(key, Response):
        return key
    query = TrailQuery.of(request)
    try:
        filters = query.filters()
        before = whole_number(request, "before", 1, 2**62)
        after = whole_number(request, "after", 0, 2**62)
        limit = whole_number(request, "limit", 1, PAGE_MAX) or PAGE_SIZE
    except InvalidParameter as error:
        return await render_trail(request, key, query, error=error)
    page = await service_state(request).call(
        lambda gallery: read_page(gallery, filters, before, after, limit))
    size = {} if limit == PAGE_SIZE else {"limit": limit}
    links = {
        "newest": query.query(**size),
        "newer": query.query(after=page.events[0].seq, **size) if page.events else "",
        "older": query.query(before=page.events[-1].seq, **size) if page.events else "",
        "export": query.query(),
    }
    return render_page(request, key, "audit.html", page=page, report=page.report, q=query,
                       limit=limit, links=links)


async def render_trail(
    request: Request, key: ApiKey, query: TrailQuery, error: InvalidParameter
) -> Response:
    """The audit page with ``error`` above the form and no events (status 400)."""
    report = await service_state(request).call(lambda gallery: gallery.audit.verify())
    return render_page(request, key, "audit.html", status=400, page=None, report=report,
                       q=query, limit=PAGE_SIZE, links={}, error=error_context(error))


@router.get("/audit/export")
async def audit_export(request: Request) -> Response:
    """Download the filtered events as JSON lines (oldest first), one event per line."""
    key = await guard(request, "export_audit_events")
    if isinstance(key, Response):
        return key
    query = TrailQuery.of(request)
    try:
        filters = query.filters()
    except InvalidParameter as error:
        return await render_trail(request, key, query, error=error)

    def export(gallery: Gallery) -> str:
        buffer = io.StringIO()
        gallery.audit.export(buffer, **filters)
        return buffer.getvalue()

    text = await service_state(request).call(export)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    response = Response(text, media_type="application/x-ndjson")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="facetrust-audit-{stamp}.jsonl"'
    )
    return response


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
                text = json.dumps(content, indent=2)
            except (ValueError, RecursionError):  # not JSON, or nested past Python's limit
                content, text = None, ""
            return render_page(request, key, "report.html", name=name, content=content,
                               text=text)
        response = FileResponse(path, media_type=REPORT_TYPES[path.suffix])
        # shown as a document of its own: no script, an opaque origin (a report's
        # inline style still applies); the other headers are PrivacyHeaders'
        response.headers["Content-Security-Policy"] = "sandbox"
        return response
    return render_page(request, key, "forbidden.html", status=404, operation=f"report {name}")
