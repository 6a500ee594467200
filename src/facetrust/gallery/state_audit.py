"""The stored consents and review decisions, checked against the audit log.

The audit chain shows that no event was edited, deleted or forged. The rows
that decide who may be searched, and which candidates people confirmed, live
beside it, in tables that anyone able to write the database file could edit
without the master key: widen a consent's purposes, push its expiry back, make
a withdrawn consent active again, or insert a reviewer's confirmation nobody
gave. Each leaves a row that disagrees with the keyed events, and this check
finds it:

* every stored consent must be one that a ``consent.grant`` event granted (same
  subject, purposes and expiry), and a consent that a ``consent.withdraw``
  event withdrew, or whose subject an ``erase`` event forgot, must not be
  active;
* every stored review decision must be one that a ``review`` event recorded
  (same identification, candidate, reviewer and decision);
* the operating points recorded for custom models (:mod:`.calibrations`) must
  be, for each model id, those the last ``calibration.recorded`` event of that
  model recorded.

:class:`~facetrust.audit.AuditLog` runs it in the same snapshot as the chain, so
``facetrust audit verify``, the REST service and the console report it alike.
A withdrawn or missing row is not reported: it can only take access away, and
the chain records the history anyway.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..store.base import AuditRecord, ConsentRecord, Store
from .calibrations import CALIBRATIONS_META

__all__ = ["state_against_the_log"]

#: Subjects read at a time.
PAGE = 5000


@dataclass(frozen=True)
class _Granted:
    seq: int
    subject_id: str
    purposes: tuple[str, ...]
    expires_at: str


def state_against_the_log(
    store: Store, records: Sequence[AuditRecord]
) -> tuple[int | None, str] | None:
    """The first stored consent or review that disagrees with ``records``, as
    ``(event seq, reason)`` (seq None when no event recorded it); None when all agree.

    Call it inside the store snapshot ``records`` were read in.
    """
    return _consents(store, records) or _reviews(store, records) or _calibrations(store, records)


def _consents(store: Store, records: Sequence[AuditRecord]) -> tuple[int | None, str] | None:
    granted: dict[str, _Granted] = {}
    withdrawn: dict[str, int] = {}
    forgotten: dict[str, int] = {}
    for record in records:
        if record.kind == "consent.grant":
            body = _body(record)
            granted[str(body.get("consent_id"))] = _Granted(
                record.seq, record.subject_ids[0] if record.subject_ids else "",
                tuple(body.get("purposes") or ()), str(body.get("expires_at")),
            )
        elif record.kind == "consent.withdraw":
            for consent_id in _body(record).get("consent_ids") or ():
                withdrawn.setdefault(str(consent_id), record.seq)
        elif record.kind == "erase" and _body(record).get("subject_forgotten"):
            for subject_id in record.subject_ids:
                forgotten.setdefault(subject_id, record.seq)
    after: str | None = None
    while page := store.page_subjects(after=after, limit=PAGE):
        for consent in store.consents_of_subjects([s.subject_id for s in page]):
            problem = _disagreement(consent, granted, withdrawn, forgotten)
            if problem is not None:
                return problem
        after = page[-1].subject_id
    return None


def _disagreement(
    consent: ConsentRecord, granted: dict[str, _Granted], withdrawn: dict[str, int],
    forgotten: dict[str, int],
) -> tuple[int | None, str] | None:
    name = f"consent {consent.consent_id} of subject {consent.subject_id}"
    grant = granted.get(consent.consent_id)
    if grant is None:
        return None, (
            f"{name} is stored, but no consent.grant event granted it: it was written into "
            "the database outside facetrust"
        )
    if (grant.subject_id, grant.purposes, grant.expires_at) != (
        consent.subject_id, consent.purposes, consent.expires_at
    ):
        return grant.seq, (
            f"{name} is not as event {grant.seq} granted it (stored: purposes "
            f"{list(consent.purposes)}, expiring {consent.expires_at}; granted: purposes "
            f"{list(grant.purposes)} for {grant.subject_id}, expiring {grant.expires_at}): "
            "the consent table was edited"
        )
    if consent.withdrawn_at is None:
        ended = withdrawn.get(consent.consent_id) or forgotten.get(consent.subject_id)
        if ended is not None:
            return ended, (
                f"{name} was withdrawn by event {ended}, but is stored as active: the consent "
                "table was edited"
            )
    return None


def _reviews(store: Store, records: Sequence[AuditRecord]) -> tuple[int | None, str] | None:
    recorded: dict[tuple[str, str, str], tuple[str, int]] = {}
    for record in records:
        if record.kind == "review":
            body = _body(record)
            key = (str(body.get("identification_id")),
                   record.subject_ids[0] if record.subject_ids else "", str(record.actor))
            recorded[key] = (str(body.get("decision")), record.seq)
    after: tuple[str, str, str] | None = None
    while page := store.page_reviews(after, limit=PAGE):
        for review in page:
            key = (review.identification_id, review.subject_id, review.reviewer)
            found = recorded.get(key)
            name = (f"the {review.decision} by {review.reviewer} of candidate "
                    f"{review.subject_id} in identification {review.identification_id}")
            if found is None:
                return None, (f"{name} is stored, but no review event recorded it: it was "
                              "written into the database outside facetrust")
            if found[0] != review.decision:
                return found[1], (f"{name} is stored, but event {found[1]} recorded a "
                                  f"{found[0]}: the review table was edited")
        after = key
    return None


def _calibrations(
    store: Store, records: Sequence[AuditRecord]
) -> tuple[int | None, str] | None:
    recorded: dict[str, tuple[Any, int]] = {}
    for record in records:
        if record.kind == "calibration.recorded":
            body = _body(record)
            recorded[str(body.get("model_id"))] = (body.get("calibration"), record.seq)
    raw = store.get_meta(CALIBRATIONS_META)
    try:
        stored = {} if raw is None else json.loads(raw)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        return None, ("the recorded calibrations are not readable: they were edited outside "
                      "facetrust")
    for model_id, calibration in sorted(stored.items()):
        found = recorded.get(model_id)
        if found is None:
            return None, (f"operating points for model {model_id!r} are stored, but no "
                          "calibration.recorded event recorded them: they were written into "
                          "the database outside facetrust")
        if found[0] != calibration:
            return found[1], (f"the operating points stored for model {model_id!r} are not "
                              f"those event {found[1]} recorded: the calibration was edited")
    return None


def _body(record: AuditRecord) -> dict[str, Any]:
    try:
        body = json.loads(record.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
