"""What one running service holds: the gallery, its lock, the keys and the limits.

The :class:`~facetrust.gallery.Gallery` is not thread-safe, so every call
into it takes :attr:`ServiceState.lock`; run several server processes
(``facetrust serve --workers N``) to use several cores: they share the
gallery's files safely.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from ..errors import FacetrustError
from ..gallery import Gallery
from ..gallery.refusals import bounded, entry_point_fields, is_audited_refusal
from .apikeys import ApiKey, ApiKeys
from .limits import FailureThrottle, TokenBucket
from .metrics import Metrics
from .offload import in_worker_thread
from .problems import Problem, problem_of
from .refusals import FloodCounter, current_record, mark_audited, note_gallery_reached
from .sessions import ConsoleSessions
from .settings import ServiceSettings

T = TypeVar("T")
log = logging.getLogger("facetrust.service")

#: Most seconds the audit event of a committed change waits for the gallery (see
#: :meth:`ServiceState.record_change`); no client waits for it.
CHANGE_AUDIT_WAIT_S = 600.0


async def to_the_end(work: Awaitable[T]) -> T:
    """Await ``work`` in a task of its own that the request's cancellation (its
    timeout, a client gone) does not stop: a change it commits is followed by
    its audit event even when the client has stopped waiting for the answer.
    If it then fails, with nobody left to answer, the failure is logged."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_log_failure)
        raise


def _log_failure(task: asyncio.Future[Any]) -> None:
    error = None if task.cancelled() else task.exception()
    if error is not None:
        log.error(
            "A change went on after its request timed out and then failed; its audit "
            "event may be missing: %s", error,
        )


@dataclass
class ServiceState:
    """Everything the routes and console pages of one app share (``app.state.service``)."""

    settings: ServiceSettings
    gallery: Gallery
    keys: ApiKeys
    metrics: Metrics
    identify_bucket: TokenBucket
    reports_dir: Path
    lock: threading.Lock
    sessions: ConsoleSessions
    floods: FloodCounter
    #: Failed authentications per client address.
    address_failures: FailureThrottle
    #: Threads argon2 may use at once (the rest stay free for the gallery).
    hash_limiter: anyio.CapacityLimiter
    #: Threads the service database's calls may use at once (see :meth:`call_service_db`).
    database_limiter: anyio.CapacityLimiter
    #: Argon2 checks in progress, by presented key (see :mod:`.auth`): the event loop's
    #: own, so no lock.
    verifications: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)

    def _locked(self, fn: Callable[[Gallery], T], wait_s: float | None = None) -> T:
        if not self.lock.acquire(timeout=wait_s or self.settings.request_timeout_s):
            raise Problem(
                "busy",
                "The gallery is busy with other requests. Retry shortly, or run more server "
                "processes (facetrust serve --workers N).",
                headers={"Retry-After": "1"},
            )
        try:
            note_gallery_reached()  # (a thread of the request: its context is copied here)
            return fn(self.gallery)
        finally:
            self.lock.release()

    async def call(
        self,
        fn: Callable[[Gallery], T],
        *,
        wait_s: float | None = None,
        operation: str | None = None,
        purpose: str | None = None,
        subject_ids: Iterable[str] = (),
    ) -> T:
        """Run ``fn(gallery)`` in a worker thread, under the gallery lock (waited for
        up to ``wait_s``, by default the request timeout).

        A refusal the gallery records meanwhile (its ``<kind>.refused`` event)
        also records the request's route, ``operation`` (by default the
        route's), status and problem type, and the ``purpose`` and
        ``subject_ids`` the request named (by default the subject id of the
        route's path) where the gallery's event names none: that event is
        the request's one refusal event, so it is marked audited.
        """
        record = current_record()
        named = list(subject_ids) or list(record.subject_ids if record else ())

        def service_fields(error: BaseException) -> dict[str, Any]:
            problem = problem_of(error) if isinstance(error, FacetrustError) else None
            return {
                "operation": operation or (record.operation if record else None),
                "route": record.route if record else None,
                "problem": problem.uri if problem else None,
                "status": problem.status if problem else None,
                "purpose": purpose,
                "subject_ids": named,
            }

        def described(gallery: Gallery) -> T:
            with entry_point_fields(service_fields):
                return fn(gallery)

        try:
            return await anyio.to_thread.run_sync(
                functools.partial(self._locked, described, wait_s), abandon_on_cancel=True
            )
        except FacetrustError as error:
            if is_audited_refusal(error):
                mark_audited()
            raise

    async def call_service_db(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``, which reads or writes the service database (keys, sessions,
        limits), in a worker thread of its own small pool (:attr:`database_limiter`).

        Never on the event loop, and never in the threads the gallery's work
        needs: requests with unknown keys, or a service database that hangs,
        cannot take those from the gallery. A request cancelled meanwhile (its
        timeout) stops waiting; the call runs to its end in its thread.
        """
        return await in_worker_thread(fn, *args, limiter=self.database_limiter)

    async def use_biometrics(
        self,
        key: ApiKey,
        operation: str,
        fn: Callable[[Gallery], T],
        *,
        purpose: str | None = None,
        subject_ids: Iterable[str] = (),
    ) -> T:
        """Like :meth:`call`, for a request that touches biometric data: every
        refusal leaves exactly one audit event with the key's id.

        The gallery audits what it does with the key's ``actor``, and a
        request it refuses (no face, no consent, bad image, ...) as its own
        ``<kind>.refused`` with the service's fields (see :meth:`call`). A
        refusal it did not record is audited here as ``service.refused``,
        with the ``purpose`` and ``subject_ids`` the request named (by
        default the subject id of the route's path).
        """
        record = current_record()
        named = list(subject_ids) or list(record.subject_ids if record else ())

        def audited(gallery: Gallery) -> T:
            try:
                return fn(gallery)
            except FacetrustError as error:
                if is_audited_refusal(error):
                    raise  # its one event is the gallery's
                problem = problem_of(error)
                gallery.audit.append(
                    "service.refused",
                    actor=key.actor,
                    purpose=bounded(purpose),
                    subject_ids=bounded(named),
                    operation=operation,
                    route=record.route if record else None,
                    problem=problem.uri,
                    status=problem.status,
                )
                raise

        try:
            return await self.call(audited, operation=operation, purpose=purpose,
                                   subject_ids=named)
        except FacetrustError:
            mark_audited()
            raise

    async def record(self, kind: str, *, actor: str, **fields: Any) -> None:
        """Append one service event (console login refused, ...) to the audit log."""
        await self.call(lambda g: g.audit.append(kind, actor=actor, **fields))

    def append_change(self, kind: str, *, actor: str, **fields: Any) -> None:
        """:meth:`record_change` for a worker thread (the audit hook of a key made
        in one, see :func:`~.routes_admin.create_audited_key`): waits up to
        :data:`CHANGE_AUDIT_WAIT_S` for the gallery."""
        self._locked(lambda g: g.audit.append(kind, actor=actor, **fields), CHANGE_AUDIT_WAIT_S)

    async def record_change(self, kind: str, *, actor: str, **fields: Any) -> None:
        """Append the audit event of a change already committed elsewhere (a key
        created or revoked, a console session opened or ended).

        Run it inside :func:`to_the_end` with the change: it waits up to
        :data:`CHANGE_AUDIT_WAIT_S` for the gallery, not the request timeout,
        so a busy gallery delays the event instead of losing it.
        """
        await self.call(
            lambda g: g.audit.append(kind, actor=actor, **fields), wait_s=CHANGE_AUDIT_WAIT_S
        )
