"""Retries without duplicates: the ``Idempotency-Key`` header of state-changing POSTs.

A client that got no answer (a timeout, a dropped connection, a server killed
mid-request) sends the same request again with the same ``Idempotency-Key``
(1 to 255 visible ASCII characters; a UUID is a good choice):

* if the first request completed, its response (status and body) comes back
  with ``Idempotent-Replayed: true``, and nothing changes;
* if it did not (the server died before committing), the retry runs it now:
  the change happens exactly once either way;
* the same key with another request (another route, subject or body) is
  refused: 422 ``idempotency-key-reused``;
* a retry that arrives while the first is still running *waits* for it (the
  gallery lock in one process, the store's write lock across processes) and
  then gets its response; past the request timeout it gets 503 with
  ``Retry-After``.

Keys belong to the API key that sent them, so two clients never collide, and
are kept :data:`KEEP_FOR` (24 hours); expired ones are purged by the next
keyed request. Only successful responses are kept: a refused request changed
nothing, so its retry runs again (and succeeds, e.g., once consent is given).

**One transaction.** A keyed request runs inside :meth:`Gallery.batch`: the
lookup of the key, the change, its audit event and the stored response are
one store transaction (the subject's data key commits just before it). A
crash therefore leaves the change *and* its stored response, or neither. The
cost: a keyed request holds the store's write lock while its face is
computed. A refusal's audit event, the gallery's own (with the service's
route, problem type and status, and the request id), rolls back with the
rest and is written again after the rollback (``batch(audit_refusals=True)``).

One exception: a consent withdrawal may erase the subject's biometric data,
and an erasure commits in steps of its own (the data key is destroyed and
the write-ahead log truncated between them), so it cannot run inside another
transaction. Its response is stored in the transaction just after. A crash
in between leaves the withdrawal done without its stored response: the retry
runs again and finds nothing left to withdraw, so it changes no data (it
answers ``withdrawn: []``, or 422 for a named ``consent_id``, instead of the
first answer; the attempt is audited).

Stored responses about a subject hold personal data, so they go with it: an
erasure (``forget``, or the last consent withdrawn, which also removes the
display name) deletes every stored response about the subject.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Protocol

from fastapi import Header, Request, Response

from ..gallery import Gallery
from ..store.base import IdempotencyRecord
from .apikeys import ApiKey
from .auth import service_state
from .problems import Problem

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

#: How long a key and its response are kept.
KEEP_FOR = timedelta(hours=24)

#: What the routes accept as a key: 1 to 255 visible ASCII characters.
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

#: The ``Idempotency-Key`` header as a route parameter (documented in the OpenAPI document).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_HEADER,
        pattern=KEY_PATTERN,
        description=(
            "Makes a retry safe: the same key (from the same API key) answers the first "
            "response, marked `Idempotent-Replayed: true`, and changes nothing; the same "
            "key with a different request is refused (422). Kept 24 hours. A UUID is a "
            "good choice."
        ),
    ),
]


class Reported(Protocol):
    """A gallery result the service answers with (``to_dict()`` is the JSON body)."""

    def to_dict(self) -> dict[str, Any]: ...


def request_fingerprint(method: str, path: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 of what the request asks for: its route, path and parsed body.

    Parsed, not raw: a retried multipart upload has a new boundary but the same
    fields, so uploaded files are named by their SHA-256 in ``fields``.
    """
    canonical = json.dumps(
        {"method": method, "path": path, "fields": fields},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay_or_run(
    gallery: Gallery,
    fn: Callable[[Gallery], Reported],
    *,
    principal: str,
    key: str,
    fingerprint: str,
    status: int,
    subject_id: str | None,
    biometric: bool,
    atomic: bool = True,
) -> tuple[int, dict[str, Any], bool]:
    """Run ``fn`` once per ``(principal, key)``: ``(status, body, replayed)``.

    With ``atomic``, the lookup, ``fn``'s change and the stored response are
    one transaction (see the module docstring). Without, ``fn`` commits on its
    own (an erasure must: it destroys keys and truncates the write-ahead log
    between its transactions) and the response is stored just after.
    ``subject_id`` names the subject the response is about (the body's
    ``subject_id`` when None); ``biometric`` marks a response derived from
    biometric data (an enrolment's face), deleted with it.
    """
    store = gallery.store
    now = gallery.now()

    def stored_answer() -> tuple[int, dict[str, Any], bool] | None:
        store.purge_idempotency(now.isoformat())
        stored = store.get_idempotency(principal, key)
        if stored is None:
            return None
        if stored.request_sha256 != fingerprint:
            raise Problem(
                "idempotency-key-reused",
                f"This {IDEMPOTENCY_HEADER} was already used for a different request "
                "(another route, subject or body). Use a new key for a new request; "
                "resend the first request unchanged to get its response.",
            )
        body: dict[str, Any] = json.loads(stored.response)
        return stored.status, body, True

    def keep(body: dict[str, Any]) -> None:
        about = subject_id if subject_id is not None else body.get("subject_id")
        store.put_idempotency(
            IdempotencyRecord(
                principal=principal,
                key=key,
                request_sha256=fingerprint,
                status=status,
                response=json.dumps(body, ensure_ascii=False),  # key order kept: same bytes
                subject_id=about if isinstance(about, str) else None,
                biometric=biometric,
                created_at=now.isoformat(),
                expires_at=(now + KEEP_FOR).isoformat(),
            )
        )

    if atomic:
        with gallery.batch(audit_refusals=True):  # a refusal's event outlives the rollback
            answer = stored_answer()
            if answer is not None:
                return answer
            body = fn(gallery).to_dict()
            keep(body)
            return status, body, False
    with store.transaction():
        answer = stored_answer()
    if answer is not None:
        return answer
    body = fn(gallery).to_dict()
    with store.transaction():
        if store.get_idempotency(principal, key) is None:  # else another process was first
            keep(body)
    return status, body, False


async def respond(
    request: Request,
    response: Response,
    key: ApiKey,
    operation: str,
    fn: Callable[[Gallery], Reported],
    *,
    idempotency_key: str | None,
    fields: Mapping[str, Any],
    status: int,
    subject_id: str | None = None,
    biometric: bool = False,
    audited: bool = True,
    atomic: bool = True,
) -> dict[str, Any]:
    """Run a state-changing route's gallery call, once per ``Idempotency-Key``.

    Without an ``idempotency_key`` (the header, validated by the route), ``fn``
    simply runs. With it, see :func:`replay_or_run`;
    a replay sets the first response's status and ``Idempotent-Replayed: true``.
    ``audited`` routes run through :meth:`ServiceState.use_biometrics`, so a
    refusal the gallery does not record is audited as ``service.refused``.

    Parameters
    ----------
    fields : mapping
        The parsed request body (uploaded files by their SHA-256): with the
        method and path, what a retry must repeat exactly.
    status : int
        The route's success status.
    atomic : bool
        False for a call that commits on its own (an erasure); see :func:`replay_or_run`.
    """
    state = service_state(request)
    presented = idempotency_key
    named = [subject_id] if subject_id is not None else []
    if presented is None:
        run: Callable[[Gallery], dict[str, Any]] = lambda g: fn(g).to_dict()  # noqa: E731
        return await (
            state.use_biometrics(key, operation, run, subject_ids=named)
            if audited
            else state.call(run)
        )
    fingerprint = request_fingerprint(request.method, request.url.path, fields)

    def keyed(gallery: Gallery) -> tuple[int, dict[str, Any], bool]:
        return replay_or_run(
            gallery, fn, principal=key.key_id, key=presented, fingerprint=fingerprint,
            status=status, subject_id=subject_id, biometric=biometric, atomic=atomic,
        )

    answered, body, replayed = await (
        state.use_biometrics(key, operation, keyed, subject_ids=named)
        if audited
        else state.call(keyed)
    )
    response.status_code = answered
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return body
