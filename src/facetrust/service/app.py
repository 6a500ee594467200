"""``create_app(settings) -> FastAPI``: the REST API and the web console in one app."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI

from ..config import Settings
from ..gallery import Gallery, GalleryConfig, find_config
from ..gallery.backends import database_url
from ..pipeline import FacePipeline
from . import (
    console,
    routes_admin,
    routes_audit,
    routes_health,
    routes_reviews,
    routes_search,
    routes_subjects,
)
from .apikeys import ApiKeys, SqlApiKeyStore
from .auth import KeyBeforeBody
from .buckets import SqlBuckets
from .headers import PrivacyHeaders
from .limits import BodySizeLimit, FailureThrottle, RequestTimeout, TokenBucket
from .metrics import Metrics, MetricsMiddleware, install_access_log_filter
from .policy import record_policy_change
from .problems import install_handlers
from .refusals import FloodCounter, RefusalAudit, write_repeated
from .request_ids import RequestIdMiddleware
from .service_db import ServiceDatabase, open_service_database
from .sessions import SESSION_KEY_LABEL, ConsoleSessions
from .settings import ServiceSettings
from .state import ServiceState

#: Threads that may run argon2 at once (the rest of the pool stays free for the gallery).
HASHING_THREADS = 4
#: Threads that may wait on the service database at once (keys, sessions, rate limits).
SERVICE_DB_THREADS = 8

API_VERSION = "1.0.0"

DESCRIPTION = """\
Face recognition with consent, purpose limitation, human review and a tamper-evident
audit log, over HTTP. Authenticate with `Authorization: Bearer ft_<id>_<secret>`.

Roles: **enroller** (subjects, consents, enrolment, erasure), **operator** (verify,
identify: purpose and case reference required), **auditor** (audit log and evaluation
reports, read-only), **admin** (API keys, retention sweep). Errors are RFC 9457
`application/problem+json` with a stable `type` (see `GET /problems`).
Scores are Euclidean distances: lower is more similar; a match is `distance <= threshold`.
"""


def open_gallery(settings: ServiceSettings) -> Gallery:
    """Open the gallery named by ``settings`` with a pipeline held to the stricter of
    the service's and the library's image caps (:func:`hold_to_service_caps`)."""
    config = GalleryConfig.load(find_config(settings.gallery))
    gallery = Gallery.open(config, pipeline=FacePipeline(Settings.from_env()))
    hold_to_service_caps(gallery, settings)
    return gallery


def hold_to_service_caps(gallery: Gallery, settings: ServiceSettings) -> None:
    """Lower the image caps of ``gallery``'s pipeline to the service's where those are
    stricter, never raising them (:meth:`ServiceSettings.image_settings`).

    The one place the service's caps reach the pipeline that reads its photos,
    whether the service opened the gallery or was given one (``create_app(gallery=)``):
    the REST API, the console and the ``policy.changed`` event then all see the caps
    in force as ``gallery.pipeline.settings``. Applying it again changes nothing.
    """
    pipeline = gallery.pipeline
    pipeline.settings = settings.image_settings(pipeline.settings)


def open_service_database_of(settings: ServiceSettings, gallery: Gallery) -> ServiceDatabase:
    """The service database of ``gallery`` (see :meth:`ServiceSettings.service_database`)."""
    return open_service_database(
        settings.service_database(Path(gallery.config.db_path), database_url(gallery.config))
    )


def create_app(
    settings: ServiceSettings | None = None, *, gallery: Gallery | None = None
) -> FastAPI:
    """The service as an ASGI app.

    The gallery is opened (and the face model loaded) when the app starts, so
    building the app, e.g. to write its OpenAPI document, touches no files.

    Parameters
    ----------
    settings : ServiceSettings, optional
        From ``FACETRUST_SERVICE_*`` variables by default.
    gallery : Gallery, optional
        An open gallery to serve (the app then does not close it). Its pipeline is
        held to the service's image caps where those are stricter than its own
        (:func:`hold_to_service_caps`), as a gallery the app opens is.
    """
    settings = settings or ServiceSettings.from_env()
    metrics = Metrics()
    floods = FloodCounter()
    install_access_log_filter()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened: Gallery = (
            gallery if gallery is not None
            else await anyio.to_thread.run_sync(open_gallery, settings)
        )
        hold_to_service_caps(opened, settings)  # before any photo and the policy record
        database = await anyio.to_thread.run_sync(open_service_database_of, settings, opened)
        store = SqlApiKeyStore(database)
        sessions = ConsoleSessions(
            database, row_key=opened.derive_key(SESSION_KEY_LABEL),
            idle_s=settings.console_idle_minutes * 60,
            max_age_s=settings.console_session_hours * 3600,
        )
        # one limit for every process and replica of the gallery (see .buckets)
        buckets = SqlBuckets(database)
        try:
            keys = await anyio.to_thread.run_sync(ApiKeys.for_gallery, opened, store)
            await anyio.to_thread.run_sync(keys.require_sealed)
            await anyio.to_thread.run_sync(lambda: opened.pipeline.model_id)  # load models now
            await anyio.to_thread.run_sync(record_policy_change, opened, settings)
            failures = (settings.auth_failures_per_minute, settings.auth_failure_burst)
            app.state.service = state = ServiceState(
                settings=settings,
                gallery=opened,
                keys=keys,
                metrics=metrics,
                identify_bucket=TokenBucket(
                    settings.identify_per_minute, settings.identify_burst, time.time,
                    buckets=buckets,
                ),
                reports_dir=settings.reports_folder(Path(opened.config.db_path)),
                lock=threading.Lock(),
                sessions=sessions,
                floods=floods,
                address_failures=FailureThrottle(
                    *failures, clock=time.time, buckets=buckets, prefix="auth-address:"
                ),
                hash_limiter=anyio.CapacityLimiter(HASHING_THREADS),
                database_limiter=anyio.CapacityLimiter(SERVICE_DB_THREADS),
            )
            yield
            await state.call(lambda g: write_repeated(g, floods.due(everything=True)))
        finally:
            database.close()
            if gallery is None:
                opened.close()

    app = FastAPI(
        title="facetrust",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # No Swagger UI: it loads its scripts from a CDN. The document is at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.metrics = metrics
    install_handlers(app)
    console.install_error_pages(app)  # HTML, not problem+json, under /console
    for module in (
        routes_health, routes_subjects, routes_search, routes_reviews, routes_audit, routes_admin,
    ):
        app.include_router(module.router)
    app.include_router(console.router)
    # Outermost last: metrics see every answer, including 413 and timeouts.
    app.add_middleware(RequestTimeout, seconds=settings.request_timeout_s)
    app.add_middleware(KeyBeforeBody)  # inside the refusal audit, before any body is read
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(console.ConsoleErrorPages)  # their refusals as console pages
    app.add_middleware(RefusalAudit, floods=floods)  # outside the body cap: sees its 413s
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)  # every answer carries X-Request-Id
    app.add_middleware(PrivacyHeaders)  # outermost: no-store, CSP, ... on every answer, 500s too
    return app


def openapi_document() -> dict[str, Any]:
    """The service's OpenAPI document, as served at ``/openapi.json``."""
    return create_app(ServiceSettings()).openapi()


def write_openapi(path: str | os.PathLike[str]) -> Path:
    """Write :func:`openapi_document` as stable, indented JSON (checked in at docs/openapi.json)."""
    target = Path(path)
    text = json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False)
    target.write_text(text + "\n", encoding="utf-8")
    return target
