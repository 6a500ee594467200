"""The audit log: append-only, hash-chained and keyed, with a keyed head checkpoint.

Every event stores the MAC of the event before it, and its own MAC is
HMAC-SHA256, under the gallery's audit key, of its sequence number, time,
kind, actor, purpose, subjects, body and that previous MAC. So:

* **editing** an event breaks its own MAC;
* **deleting** one leaves a gap in the sequence and breaks the next link;
* **inserting** one needs the key to forge a MAC;
* **reordering** breaks the MACs (the sequence number is inside them);
* **truncating** the newest events is caught by the *head*: a keyed checkpoint
  of the newest event's sequence number and MAC, updated in the same
  transaction as every append.

Someone who holds the master key (and so the audit key) and the database could
rewrite the whole log and its head, or roll the file back to an older copy.
Anchor the head outside the database: ``facetrust audit head`` prints it; send
it to an append-only place the gallery's operators cannot rewrite (a syslog or
SIEM server, WORM object storage, a transparency log, or a signed printout)
on a schedule, and check it with ``facetrust audit verify --expect-head``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from .crypto import keyed_digest
from .errors import AuditChainBroken, InvalidParameter
from .store.base import AuditHead, AuditRecord, Store
from .text import canonical, name_key, printable_json

GENESIS_MAC = "0" * 64

#: Given every event, the first disagreement between the stored state and them, as
#: ``(seq of the event it contradicts, or None; reason)``, or None.
StateCheck = Callable[[list[AuditRecord]], "tuple[int | None, str] | None"]

#: The id of the request being served (set by the service per request); every
#: event appended while it is set records it as ``request_id``. A context
#: variable, so worker threads started for the request see it too.
_REQUEST_ID: ContextVar[str | None] = ContextVar("facetrust_request_id", default=None)


@contextmanager
def request_context(request_id: str | None) -> Iterator[None]:
    """Record ``request_id`` in every audit event appended inside this block.

    The service wraps each request in it, so an auditor can match an event to
    the request (and its ``X-Request-Id`` response header) that caused it.
    """
    token = _REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        _REQUEST_ID.reset(token)


def current_request_id() -> str | None:
    """The request id set by :func:`request_context`, or None outside a request."""
    return _REQUEST_ID.get()


@dataclass(frozen=True)
class AuditEvent:
    """One audited action.

    Attributes
    ----------
    seq : int
        Position in the log, from 1, without gaps.
    recorded_at : str
        UTC time, ISO 8601.
    kind : str
        e.g. ``"enrol"``, ``"identify"``, ``"review"``, ``"consent.grant"``,
        ``"erase"``, ``"retention.sweep"``, ``"keys.rotate"``.
    actor : str or None
        Who did it (operator, reviewer or ``"system"``).
    purpose : str or None
    subject_ids : tuple of str
        Subjects the event concerns (for an identification: those returned).
    fields : dict
        Everything else, specific to the kind.
    mac : str
        This event's chain MAC (hex).
    """

    seq: int
    recorded_at: str
    kind: str
    actor: str | None
    purpose: str | None
    subject_ids: tuple[str, ...]
    fields: dict[str, Any]
    mac: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "recorded_at": self.recorded_at,
            "kind": self.kind,
            "actor": self.actor,
            "purpose": self.purpose,
            "subject_ids": list(self.subject_ids),
            **self.fields,
            "mac": self.mac,
        }


@dataclass(frozen=True)
class AuditReport:
    """The result of checking the whole chain.

    Attributes
    ----------
    ok : bool
    events_checked : int
    first_broken_seq : int or None
        Sequence number of the first event that is missing, altered or out of place.
    reason : str
        Empty when ``ok``.
    head_seq : int
        The newest event according to the keyed head checkpoint.
    head_mac : str
    """

    ok: bool
    events_checked: int
    first_broken_seq: int | None
    reason: str
    head_seq: int
    head_mac: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "first_broken_seq": self.first_broken_seq,
            "reason": self.reason,
            "head_seq": self.head_seq,
            "head_mac": self.head_mac,
        }

    @property
    def where(self) -> str:
        """Where it broke, for a sentence: ``"at event 12"``, or ``"in the stored state"``
        when a stored row contradicts no particular event."""
        if self.first_broken_seq is None:
            return "in the stored state"
        return f"at event {self.first_broken_seq}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class AuditLog:
    """The audit log of one gallery.

    Parameters
    ----------
    store : Store
    key : bytes
        The gallery's audit key (a gallery secret, wrapped by the master key).
    now : callable returning an aware datetime
    """

    def __init__(
        self,
        store: Store,
        key: bytes,
        now: Callable[[], datetime],
        state_check: StateCheck | None = None,
    ) -> None:
        self._store = store
        self._key = key
        self._now = now
        #: Run by :meth:`verify` in the snapshot it reads the events in: whether the
        #: stored state agrees with them (see :mod:`facetrust.gallery.state_audit`).
        self._state_check = state_check

    def _mac(self, record: AuditRecord) -> str:
        content = _canonical(
            [
                record.seq,
                record.recorded_at,
                record.kind,
                record.actor,
                record.purpose,
                list(record.subject_ids),
                record.body,
                record.prev_mac,
            ]
        )
        return keyed_digest(self._key, content.encode()).hex()

    def _head_mac(self, seq: int, mac: str) -> str:
        return keyed_digest(self._key, f"facetrust audit head:{seq}:{mac}".encode()).hex()

    def append(
        self,
        kind: str,
        *,
        actor: str | None = None,
        purpose: str | None = None,
        subject_ids: Iterable[str] = (),
        **fields: Any,
    ) -> AuditEvent:
        """Append one event (inside the caller's transaction, or in its own).

        Inside :func:`request_context`, the event also records ``request_id``.
        """
        request_id = current_request_id()
        if request_id is not None and "request_id" not in fields:
            fields = {**fields, "request_id": request_id}
        with self._store.transaction():
            last = self._store.last_audit()
            seq = 1 if last is None else last.seq + 1
            draft = AuditRecord(
                seq=seq,
                recorded_at=self._now().isoformat(),
                kind=kind,
                actor=actor,
                purpose=purpose,
                subject_ids=tuple(subject_ids),
                body=_canonical(fields),
                prev_mac=GENESIS_MAC if last is None else last.mac,
                mac="",
            )
            mac = self._mac(draft)
            record = AuditRecord(**{**draft.__dict__, "mac": mac})
            self._store.append_audit(record)
            self._store.set_audit_head(AuditHead(seq, mac, self._head_mac(seq, mac)))
        return _event(record)

    def head(self) -> AuditHead:
        """The keyed checkpoint of the newest event: anchor ``seq`` and ``mac`` outside."""
        with self._store.snapshot():
            head = self._store.get_audit_head()
        return head or AuditHead(0, GENESIS_MAC, self._head_mac(0, GENESIS_MAC))

    def verify(self, expect_head: tuple[int, str] | None = None) -> AuditReport:
        """Check every event and the head; name the first event that is broken.

        Then, if the log was given a state check (a gallery's is: its stored
        consents), check the stored state against the events; a disagreement
        makes the report broken too, naming the event it contradicts (or none).

        Parameters
        ----------
        expect_head : (seq, mac), optional
            A head anchored earlier outside the database: the log must still hold
            that event with that MAC (catches a rollback to an older copy).
        """
        with self._store.snapshot():
            head = self._store.get_audit_head()
            records = list(self._store.audit_records())
            disagreement = self._state_check(records) if self._state_check else None
        head_seq = head.seq if head else 0
        head_mac = head.mac if head else GENESIS_MAC

        def broken(seq: int | None, reason: str, checked: int) -> AuditReport:
            return AuditReport(False, checked, seq, reason, head_seq, head_mac)

        previous = GENESIS_MAC
        for index, record in enumerate(records):
            expected_seq = index + 1
            if record.seq != expected_seq:
                return broken(
                    expected_seq,
                    f"event {expected_seq} is missing: the next stored event is {record.seq} "
                    "(an event was deleted, or one was inserted out of sequence)",
                    index,
                )
            if self._mac(record) != record.mac:
                return broken(
                    record.seq,
                    f"event {record.seq} does not match its MAC: it was edited, forged or "
                    "moved from another position",
                    index,
                )
            if record.prev_mac != previous:
                return broken(
                    record.seq,
                    f"event {record.seq} does not follow event {record.seq - 1}: the events "
                    "before it were deleted, inserted or reordered",
                    index,
                )
            previous = record.mac
        count = len(records)
        if head is None:
            # A gallery's log begins with its gallery.create event, so an empty log
            # is one whose events were all deleted (or a creation cut short).
            return broken(
                1,
                "the head checkpoint is missing" if count else
                "event 1 is missing and so is every later one: a gallery's log begins with "
                "its gallery.create event, so the events and the head checkpoint were "
                "deleted (or the gallery's creation was interrupted before its first event)",
                count,
            )
        if head.head_mac != self._head_mac(head.seq, head.mac):
            return broken(
                head.seq, "the head checkpoint was altered (its MAC does not match)", count
            )
        elif head.seq > count:
            return broken(
                count + 1,
                f"events {count + 1} to {head.seq} are missing: the log was truncated "
                f"(the head records {head.seq} events, {count} remain)",
                count,
            )
        elif head.seq < count or head.mac != previous:
            return broken(
                head.seq + 1 if head.seq < count else head.seq,
                f"the newest events do not match the head checkpoint (head: event {head.seq})",
                count,
            )
        if expect_head is not None:
            seq, mac = expect_head
            if seq > count:
                return broken(
                    count + 1,
                    f"the anchored head is event {seq}, but the log holds only {count} events: "
                    "it was truncated or rolled back",
                    count,
                )
            if seq >= 1 and records[seq - 1].mac != mac:
                return broken(
                    seq, f"event {seq} differs from the anchored head: the log was rewritten", count
                )
        if disagreement is not None:
            return broken(*disagreement, count)
        return AuditReport(True, count, None, "", head_seq, head_mac)

    def check(self, expect_head: tuple[int, str] | None = None) -> AuditReport:
        """Like :meth:`verify`, but raise :class:`AuditChainBroken` when broken."""
        report = self.verify(expect_head)
        if not report.ok:
            raise AuditChainBroken(
                f"The audit log is broken {report.where}: {report.reason}. "
                "Restore the database from a trusted copy and investigate."
            )
        return report

    def events(
        self,
        *,
        subject: str | None = None,
        actor: str | None = None,
        purpose: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int = 0,
        before_seq: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[AuditEvent]:
        """Events in order, filtered (``since`` inclusive, ``until`` exclusive).

        The text filters are read as every entry point reads them: outer spaces
        are ignored (a blank filter is no filter), a purpose matches in any
        Unicode normal form, and an actor matches every spelling that names the
        same person (:func:`~facetrust.text.name_key`: case and Unicode form
        aside), as the review desk compares reviewers.

        Keyset pagination over ``seq``: ``after_seq`` and ``before_seq`` are
        exclusive bounds, ``limit`` caps how many events come back. With
        ``newest_first`` the events come newest first, so
        ``events(before_seq=s, limit=n, newest_first=True)`` is the page of the
        ``n`` newest matching events older than ``s``, and
        ``events(after_seq=s, limit=n)`` the ``n`` oldest newer than ``s``.

        Parameters
        ----------
        after_seq : int, default 0
            Only events with ``seq > after_seq``.
        before_seq : int, optional
            Only events with ``seq < before_seq``.
        limit : int, optional
            At most this many events (the first ones in the order asked).
        newest_first : bool, default False
            Yield the newest events first instead of the oldest.
        """
        if limit is not None and limit < 0:
            raise InvalidParameter(
                f"The 'limit' parameter of events must be 0 or more. Got {limit} instead."
            )
        subject, actor, purpose, kind = (
            (value.strip() or None) if isinstance(value, str) else value
            for value in (subject, actor, purpose, kind)
        )
        actor = None if actor is None else name_key(actor)
        purpose = None if purpose is None else canonical(purpose)
        with self._store.snapshot():
            records = list(self._store.audit_records(after_seq))
        chosen = (
            r for r in (reversed(records) if newest_first else records)
            if (before_seq is None or r.seq < before_seq) and self._matches(
                r, subject=subject, actor=actor, purpose=purpose, kind=kind,
                since=since, until=until,
            )
        )
        for record in itertools.islice(chosen, limit):
            yield _event(record)

    @staticmethod
    def _matches(
        record: AuditRecord,
        *,
        subject: str | None,
        actor: str | None,
        purpose: str | None,
        kind: str | None,
        since: datetime | None,
        until: datetime | None,
    ) -> bool:
        if subject is not None and subject not in record.subject_ids:
            return False
        if actor is not None and name_key(record.actor or "") != actor:
            return False
        if purpose is not None and (
            record.purpose is None or canonical(record.purpose) != purpose
        ):
            return False
        if kind is not None and record.kind != kind:
            return False
        at = datetime.fromisoformat(record.recorded_at)
        if since is not None and at < since:
            return False
        return until is None or at < until

    def export(self, stream: IO[str], **filters: Any) -> int:
        """Write events as JSON lines to ``stream``; returns how many were written.

        Characters a reader would not see as they are (newlines, escape
        sequences, bidi overrides: :mod:`facetrust.text`) are written as
        ``\\uXXXX`` escapes, so one event is one line and printing the export
        to a terminal shows what was recorded.
        """
        count = 0
        for event in self.events(**filters):
            stream.write(printable_json(event.to_dict(), sort_keys=True, separators=(",", ":"))
                         + "\n")
            count += 1
        return count


def _event(record: AuditRecord) -> AuditEvent:
    return AuditEvent(
        seq=record.seq,
        recorded_at=record.recorded_at,
        kind=record.kind,
        actor=record.actor,
        purpose=record.purpose,
        subject_ids=record.subject_ids,
        fields=json.loads(record.body),
        mac=record.mac,
    )
