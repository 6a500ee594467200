"""What one running service holds: the gallery, its lock, the keys and the limits.

The :class:`~facetrust.gallery.Gallery` is not thread-safe, so every call
into it takes :attr:`ServiceState.lock`; run several server processes
(``facetrust serve --workers N``) to use several cores: they share the
gallery's files safely.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from ..errors import FacetrustError
from ..gallery import Gallery
from .apikeys import ApiKey, ApiKeys
from .limits import TokenBucket
from .metrics import Metrics
from .problems import Problem, problem_of
from .settings import ServiceSettings

T = TypeVar("T")


@dataclass
class ServiceState:
    """Everything the routes and console pages of one app share (``app.state.service``)."""

    settings: ServiceSettings
    gallery: Gallery
    keys: ApiKeys
    metrics: Metrics
    identify_bucket: TokenBucket
    reports_dir: Path
    csrf_secret: bytes
    lock: threading.Lock

    def _locked(self, fn: Callable[[Gallery], T]) -> T:
        if not self.lock.acquire(timeout=self.settings.request_timeout_s):
            raise Problem(
                "busy",
                "The gallery is busy with other requests. Retry shortly, or run more server "
                "processes (facetrust serve --workers N).",
                headers={"Retry-After": "1"},
            )
        try:
            return fn(self.gallery)
        finally:
            self.lock.release()

    async def call(self, fn: Callable[[Gallery], T]) -> T:
        """Run ``fn(gallery)`` in a worker thread, under the gallery lock."""
        return await anyio.to_thread.run_sync(
            functools.partial(self._locked, fn), abandon_on_cancel=True
        )

    async def use_biometrics(
        self, key: ApiKey, operation: str, fn: Callable[[Gallery], T]
    ) -> T:
        """Like :meth:`call`, for a request that touches biometric data.

        The gallery audits what it does with the key's ``actor``; a request it
        refuses (no face, no consent, bad image, ...) is audited here as
        ``service.refused``, so every attempt leaves a trace with the key's id.
        """

        def audited(gallery: Gallery) -> T:
            try:
                return fn(gallery)
            except FacetrustError as error:
                gallery.audit.append(
                    "service.refused",
                    actor=key.actor,
                    operation=operation,
                    problem=problem_of(error).uri,
                )
                raise

        return await self.call(audited)
