"""Prometheus text-format metrics, kept per app (no global registry).

Exposed at ``GET /metrics`` (text format 0.0.4): request counts and latency
histograms by route template and status, problems by type, and refusals by
the rate limiter. No subject ids, key ids or other personal data are labels.

The access log (uvicorn's ``uvicorn.access`` logger) gets the same treatment:
:class:`RouteTemplateFilter` replaces each line's raw path with the route
template (``POST /v1/subjects/{subject_id}/enrolments``), so subject ids in
paths never reach the log, and no log line outlives an erasure with one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from contextvars import ContextVar
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency histogram bucket upper bounds, in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_SCOPE: ContextVar[Scope | None] = ContextVar("facetrust_access_scope", default=None)


def route_of(scope: Scope | None) -> str:
    """The route template ``scope`` was routed to, or ``unmatched``."""
    route: Any = scope.get("route") if scope is not None else None
    return str(getattr(route, "path", "") or "unmatched")


class RouteTemplateFilter(logging.Filter):
    """Rewrite uvicorn access-log records: the route template instead of the raw path.

    uvicorn logs a request from inside the app's ``send``, where the request's
    scope (set by :class:`MetricsMiddleware`) is known; its query string is
    dropped with the path.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, _path, version, status = args
            record.args = (client, method, route_of(_SCOPE.get()), version, status)
        return True


def install_access_log_filter() -> None:
    """Add :class:`RouteTemplateFilter` to the ``uvicorn.access`` logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RouteTemplateFilter) for f in logger.filters):
        logger.addFilter(RouteTemplateFilter())


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


class Metrics:
    """Thread-safe counters and histograms rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self._latency: dict[tuple[str, str], list[int]] = {}
        self._latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self._problems: dict[str, int] = defaultdict(int)
        self._rate_limited = 0

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request (``route`` is the template, e.g. ``/v1/subjects/{id}``)."""
        with self._lock:
            self._requests[(method, route, str(status))] += 1
            key = (method, route)
            counts = self._latency.setdefault(key, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._latency_sum[key] += seconds

    def problem(self, slug: str) -> None:
        with self._lock:
            self._problems[slug] += 1

    def rate_limited(self) -> None:
        with self._lock:
            self._rate_limited += 1

    def render(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        out: list[str] = []
        with self._lock:
            out.append("# HELP facetrust_http_requests_total HTTP requests by route and status.")
            out.append("# TYPE facetrust_http_requests_total counter")
            for (method, route, status), n in sorted(self._requests.items()):
                labels = _labels(method=method, route=route, status=status)
                out.append(f"facetrust_http_requests_total{labels} {n}")
            out.append("# HELP facetrust_http_request_duration_seconds Request latency.")
            out.append("# TYPE facetrust_http_request_duration_seconds histogram")
            for (method, route), counts in sorted(self._latency.items()):
                name = "facetrust_http_request_duration_seconds"
                for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                    labels = _labels(method=method, route=route, le=bound)
                    out.append(f"{name}_bucket{labels} {n}")
                base = _labels(method=method, route=route)
                out.append(f"{name}_sum{base} {self._latency_sum[(method, route)]:.6f}")
                out.append(f"{name}_count{base} {counts[-1]}")
            out.append("# HELP facetrust_problems_total Error responses by problem type.")
            out.append("# TYPE facetrust_problems_total counter")
            for slug, n in sorted(self._problems.items()):
                out.append(f"facetrust_problems_total{_labels(type=slug)} {n}")
            out.append("# HELP facetrust_rate_limited_total Requests refused by the rate limit.")
            out.append("# TYPE facetrust_rate_limited_total counter")
            out.append(f"facetrust_rate_limited_total {self._rate_limited}")
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Record every HTTP request's route template, status and latency in ``metrics``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        _SCOPE.set(scope)

        async def tracking(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        finally:
            self.metrics.request(
                scope.get("method", "GET"), route_of(scope), status, time.perf_counter() - start
            )
