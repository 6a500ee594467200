"""Auditing refused requests to biometric endpoints, with a bounded volume.

A request to verify, identify, enrol or review (or to read a review case, the
review queue or their photos), or to read a subject's record or consents,
grant or withdraw a consent or erase a subject, that is refused before the gallery sees it (400
a body that cannot be parsed, 401 no or bad key, 403 wrong role or CSRF, 413
body too large, 422 invalid request, 429 rate limit, 503 a request that timed
out or found the gallery busy before it got there, such as a body trickled in
slower than the request timeout; in the console, a 303 to
the login page is its 401) is written to the gallery's audit
log as ``service.refused`` with: the actor (``key:<id>``, or ``anonymous``
when no valid key was shown), the route template, the status, the problem
type, the purpose and subject ids the request named, and the SHA-256 of each
uploaded file (never the file). A request the gallery refuses (no face, no
consent, an unknown subject, ...) leaves one event too: the gallery's own
``<kind>.refused``, with its real reason, to which the service adds its route,
operation, status and problem type (see :meth:`ServiceState.call`); a
refusal the gallery did not record (one of the service's own checks inside
the call) is written as ``service.refused`` by
:meth:`ServiceState.use_biometrics`, once.

Floods cannot fill the disk: of identical refusals (same actor, route,
status and problem type), the first ``FULL_PER_MINUTE`` of each minute are
written in full: 5 for anonymous refusals and 429s, 60 for other refusals
of a key (which is accountable, and can be revoked). The rest of that
minute is counted and written as one ``service.refused.repeated`` event with
its ``count`` when the minute is over (at the next refusal, or when the
service stops). A refusal before authentication (401, 413 from the body
cap, or 400 for a body the framework could not parse, which it reads before
the key is checked) is anonymous; when it carried a well-formed key, the
key's id is noted as ``presented_key_id``, unverified.

The event is appended before the refusal is sent, so a client that saw its
refusal can find it in the log; a 503's event just after it (a timeout may mean
the gallery's database is stuck: the client is not kept waiting on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..gallery import Gallery
from ..gallery.refusals import bounded
from .apikeys import parse_key

__all__ = [
    "BIOMETRIC_ROUTES",
    "REFUSED_STATUSES",
    "FloodCounter",
    "RefusalAudit",
    "FULL_PER_MINUTE",
    "FULL_PER_MINUTE_OF_A_KEY",
    "RequestRecord",
    "current_record",
    "mark_audited",
    "note_gallery_reached",
    "note_key",
]

log = logging.getLogger("facetrust.service")

#: Statuses of refusals audited here (400: a body the framework could not parse,
#: answered before the key is checked; 503: the request timed out, or the gallery was
#: too busy, before the gallery saw it).
REFUSED_STATUSES = frozenset({400, 401, 403, 413, 422, 429, 503})

#: (method, route template) of the endpoints that touch biometric data or consent ->
#: their operation.
BIOMETRIC_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/verify"): "verify_photos",
    ("POST", "/v1/subjects/{subject_id}/verify"): "verify_subject",
    ("POST", "/v1/identify"): "identify",
    ("POST", "/v1/subjects/{subject_id}/enrolments"): "enroll_photo",
    ("POST", "/v1/identifications/{identification_id}/reviews"): "review_candidate",
    ("POST", "/console/verify"): "verify_photos",
    ("POST", "/console/identify"): "identify",
    ("POST", "/console/enrol"): "enroll_photo",
    ("GET", "/v1/identifications/{identification_id}/probe"): "get_probe_photo",
    ("GET", "/v1/identifications/{identification_id}/candidates/{subject_id}/reference"):
        "get_reference_photo",
    ("POST", "/console/reviews/{identification_id}"): "review_candidate",
    ("GET", "/console/reviews/{identification_id}/probe.jpg"): "get_probe_photo",
    ("GET", "/console/reviews/{identification_id}/reference/{subject_id}.jpg"):
        "get_reference_photo",
    ("POST", "/console/verify-subject"): "verify_subject",
    # a review case and the queue hold 1:N search results (candidates, distances, purpose)
    ("GET", "/v1/identifications/{identification_id}"): "get_review_case",
    ("GET", "/v1/reviews"): "list_review_queue",
    ("GET", "/console/reviews/{identification_id}"): "get_review_case",
    ("GET", "/console/reviews"): "list_review_queue",
    # a subject's record and consents, and what erases their biometric data
    ("GET", "/v1/subjects/{subject_id}"): "get_subject",
    ("GET", "/v1/subjects/{subject_id}/consents"): "list_consents",
    ("POST", "/v1/subjects/{subject_id}/consents"): "grant_consent",
    ("POST", "/v1/subjects/{subject_id}/consents/withdraw"): "withdraw_consent",
    ("DELETE", "/v1/subjects/{subject_id}"): "erase_subject",
    ("GET", "/console/subjects/{subject_id}"): "get_subject",
    ("POST", "/console/subjects/{subject_id}/withdraw"): "withdraw_consent",
    ("POST", "/console/subjects/{subject_id}/erase"): "erase_subject",
    ("POST", "/console/consent"): "grant_consent",
}

#: Path prefixes of the GET routes in :data:`BIOMETRIC_ROUTES` (review cases, the
#: review queue and the photos shown to reviewers, a subject's record and consents).
BIOMETRIC_READ_PREFIXES = ("/v1/identifications/", "/v1/reviews", "/console/reviews",
                           "/v1/subjects/", "/console/subjects/")

#: A console POST without a live session is sent here (303): the console's 401.
LOGIN_PAGE = b"/console/login"

#: Identical refusals written in full per minute before counting starts: anonymous
#: ones and 429s, and the other refusals of one key.
FULL_PER_MINUTE = 5
FULL_PER_MINUTE_OF_A_KEY = 60
_PROBLEM_BODY_LIMIT = 16_384


@dataclass
class RequestRecord:
    """What the routes learn about one request that its refusal audit needs."""

    actor: str = "anonymous"
    audited: bool = False
    #: The request's work got the gallery lock: whatever it did there, the gallery audits.
    reached_gallery: bool = False
    subject_ids: tuple[str, ...] = ()
    route: str | None = None
    operation: str | None = None


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("facetrust_request", default=None)


def current_record() -> RequestRecord | None:
    """The record of the request being handled (None outside :class:`RefusalAudit`)."""
    return _CURRENT.get()


def note_key(key: Any) -> None:
    """Remember the authenticated key of the current request (its ``actor``)."""
    record = _CURRENT.get()
    if record is not None:
        record.actor = str(key.actor)


def mark_audited() -> None:
    """Say that the current request's refusal is already in the audit log."""
    record = _CURRENT.get()
    if record is not None:
        record.audited = True


def note_gallery_reached() -> None:
    """Say that the current request's work has started in the gallery (which audits what
    it does), so a timeout after this point is not a refusal before the gallery."""
    record = _CURRENT.get()
    if record is not None:
        record.reached_gallery = True


@dataclass
class _Flood:
    minute: int
    written: int = 1
    count: int = 0


class FloodCounter:
    """Decides which refusals are written in full and counts the others, per minute.

    Thread-safe; ``clock`` returns Unix seconds and is injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._floods: dict[tuple[str, str, int, str], _Flood] = {}
        self._finished: list[dict[str, Any]] = []

    @staticmethod
    def allowance(actor: str, status: int) -> int:
        """How many refusals like this one are written in full per minute."""
        if actor == "anonymous" or status == 429:
            return FULL_PER_MINUTE
        return FULL_PER_MINUTE_OF_A_KEY

    def _finish(self, name: tuple[str, str, int, str], flood: _Flood) -> None:
        if flood.count:
            actor, route, status, problem = name
            self._finished.append({
                "actor": actor, "route": route, "status": status, "problem": problem or None,
                "minute": datetime.fromtimestamp(flood.minute * 60, UTC).isoformat(),
                "count": flood.count,
            })

    def admit(self, actor: str, route: str, status: int, problem: str) -> bool:
        """Whether to write this refusal in full (else it is counted for its minute)."""
        minute = int(self._clock() // 60)
        name = (actor, route, status, problem)
        with self._lock:
            flood = self._floods.get(name)
            if flood is not None and flood.minute == minute:
                if flood.written < self.allowance(actor, status):
                    flood.written += 1
                    return True
                flood.count += 1
                return False
            if flood is not None:
                self._finish(name, flood)
            self._floods[name] = _Flood(minute)
            return True

    def due(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """The ``service.refused.repeated`` events of minutes that are over (or of all)."""
        minute = int(self._clock() // 60)
        with self._lock:
            for name, flood in list(self._floods.items()):
                if everything or flood.minute < minute:
                    del self._floods[name]
                    self._finish(name, flood)
            out, self._finished = self._finished, []
        return out


def write_repeated(gallery: Gallery, events: list[dict[str, Any]]) -> None:
    """Append the counted refusals to ``gallery``'s audit log."""
    for event in events:
        actor = event.pop("actor")
        gallery.audit.append("service.refused.repeated", actor=actor, **event)


_COMPILED = [
    (method, template, compile_path(template)[0])
    for method, template in BIOMETRIC_ROUTES
]
_SUBJECT_PATH = re.compile(r"^/v1/subjects/([^/]+)(?:/.*)?$")


def _route_of(scope: Scope) -> tuple[str | None, dict[str, str]]:
    """The biometric route template ``scope`` asks for (or None), and its path parameters.

    Matched here, before the router runs, so that refusals answered by an outer
    middleware (the 413 of the body cap) know their route too. (The ASGI path is
    already percent-decoded.)
    """
    path = str(scope.get("path", ""))
    method = scope.get("method")
    for route_method, template, regex in _COMPILED:
        found = regex.match(path)
        if found and route_method == method:
            return template, dict(found.groupdict())
    subject = _SUBJECT_PATH.match(path)
    return None, ({"subject_id": subject.group(1)} if subject else {})


async def _described(scope: Scope, body: bytes) -> dict[str, Any]:
    """Purpose, case reference, subject ids and file SHA-256s named by a request body."""
    headers = Headers(scope=scope)
    kind = headers.get("content-type", "")
    found: dict[str, Any] = {}
    files: dict[str, list[str]] = {}
    if kind.startswith("multipart/form-data"):

        async def chunks() -> AsyncGenerator[bytes, None]:
            yield body
            yield b""

        try:
            form = await MultiPartParser(headers, chunks()).parse()
        except Exception:  # a malformed upload is itself the refusal's reason
            return {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                files.setdefault(name, []).append(hashlib.sha256(data).hexdigest())
                await value.close()
            elif name in ("purpose", "case_ref", "subject_id"):
                found[name] = str(value)[:200]
    elif kind.startswith("application/json"):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested too deep to parse
            return {}
        if isinstance(parsed, dict):
            for name in ("purpose", "case_ref", "subject_id"):
                if isinstance(parsed.get(name), str):
                    found[name] = parsed[name][:200]
    if files:
        found["upload_sha256"] = files
    return found


def _presented_key_id(scope: Scope) -> str | None:
    """The id part of a well-formed Bearer key in the request (not verified)."""
    value = Headers(scope=scope).get("authorization", "")
    scheme, _, credentials = value.partition(" ")
    parsed = parse_key(credentials) if scheme.lower() == "bearer" else None
    return parsed[0] if parsed else None


class RefusalAudit:
    """ASGI middleware: audit refused requests to :data:`BIOMETRIC_ROUTES`.

    It sits outside the body-size limit (so it sees 413s) and inside the
    metrics. The request body is copied as it is read (at most the body cap),
    only for biometric routes, and parsed only when a refusal is written in full.
    """

    def __init__(self, app: ASGIApp, floods: FloodCounter) -> None:
        self.app = app
        self.floods = floods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reading = scope.get("method") in ("GET", "HEAD")
        if reading and not str(scope.get("path", "")).startswith(BIOMETRIC_READ_PREFIXES):
            await self.app(scope, receive, send)  # reads of no biometric data: not matched
            return
        template, path_params = _route_of(scope)
        operation = BIOMETRIC_ROUTES.get((scope.get("method", ""), template)) if template else None
        record = RequestRecord(
            subject_ids=tuple(str(v) for k, v in path_params.items() if k == "subject_id"),
            route=template, operation=operation,
        )
        token = _CURRENT.set(record)
        if template is None or operation is None:
            try:
                await self.app(scope, receive, send)
            finally:
                _CURRENT.reset(token)
            return
        body = bytearray()
        held: list[Message] = []
        status = 0
        refused = False

        async def copying() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def holding(message: Message) -> None:
            nonlocal status, refused
            if message["type"] == "http.response.start":
                status = int(message["status"])
                to_login = (b"location", LOGIN_PAGE) in message.get("headers", [])
                refused = status in REFUSED_STATUSES or (status == 303 and to_login)
                if status == 503 and record.reached_gallery:
                    refused = False  # timed out in the gallery, which audits its own work
            if not refused or record.audited:
                for earlier in held:
                    await send(earlier)
                held.clear()
                await send(message)
                return
            held.append(message)
            final = message["type"] == "http.response.body" and not message.get("more_body")
            if status == 503:
                # answered at once, audited after: a 503 may mean the gallery's database
                # is stuck, and waiting on it would turn the client's timeout into a hang
                await send(message)
                if final:
                    await self._audit(scope, record, operation, template, path_params,
                                      status, held, bytes(body))
                    held.clear()
                return
            if final:
                try:
                    await self._audit(scope, record, operation, template, path_params,
                                      status, held, bytes(body))
                finally:
                    for earlier in held:
                        await send(earlier)
                    held.clear()

        try:
            await self.app(scope, copying, holding)
        finally:
            _CURRENT.reset(token)

    async def _audit(
        self, scope: Scope, record: RequestRecord, operation: str, template: str,
        path_params: dict[str, Any], status: int, held: list[Message], body: bytes,
    ) -> None:
        response = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        problem = ""
        if response[:1] == b"{" and len(response) <= _PROBLEM_BODY_LIMIT:
            try:
                problem = str(json.loads(response).get("type", ""))
            except (ValueError, AttributeError):
                problem = ""
        if not problem:  # a console error page names its problem type in a header
            starts = [m for m in held if m["type"] == "http.response.start"]
            headers = dict(starts[0].get("headers", [])) if starts else {}
            problem = headers.get(b"x-problem-type", b"").decode("latin-1")
        if status == 303:  # the console's log-in redirect
            problem = "/problems/unauthorized"
        app = scope.get("app")
        state = getattr(getattr(app, "state", None), "service", None)
        if state is None:
            return
        fields: dict[str, Any] = {
            "operation": operation, "route": template, "status": status,
            "problem": problem or None, "method": scope.get("method"),
        }
        admitted = self.floods.admit(record.actor, template, status, problem)
        repeated = self.floods.due()
        if admitted:
            described = {} if status == 413 else await _described(scope, body)
            subject_ids = [str(path_params["subject_id"])] if "subject_id" in path_params else []
            if "subject_id" in described:
                subject_ids.append(described.pop("subject_id"))
            purpose = described.pop("purpose", None)
            fields.update(described)
            if record.actor == "anonymous":
                presented = _presented_key_id(scope)
                if presented:
                    fields["presented_key_id"] = presented
            if status == 413:
                fields["upload_sha256"] = None  # the upload was refused before it was read

        def write(gallery: Gallery) -> None:
            write_repeated(gallery, repeated)
            if admitted:
                # ids from the path are as long as the URL (up to 64 KiB): cut like the gallery's
                gallery.audit.append(
                    "service.refused", actor=record.actor, purpose=bounded(purpose),
                    subject_ids=bounded(subject_ids), **fields,
                )

        if admitted or repeated:
            try:
                await state.call(write)
            except Exception:  # the refusal itself must still be answered
                log.exception("Could not audit a refused %s request", template)
