"""Probes kept while their identification awaits review: sealed, deleted on decision.

A reviewer compares the probe (the searched photo, with the detected face box)
with each candidate's reference, so the probe of an identification is kept
while the identification is pending, and no longer. It is sealed with
AES-256-GCM under a data key of its own, kept in the key store under
:func:`probe_key_name` (never under a subject's key: the person in the probe is
nobody in the gallery until a review says so). When the identification is
decided (one candidate confirmed, or every candidate rejected), closed
(no candidate eligible any more, :mod:`.closing`), or
``config.pending_probe_hours`` have passed (the retention sweep), the key is
destroyed first (crypto-shredding: every copy of the ciphertext, backups
included, becomes unreadable), then the row is deleted and the deletion
audited (``pending-probe.deleted``).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from .. import crypto
from ..errors import FacetrustError
from ..faces import Box
from ..store.base import PendingProbeRecord
from .parts import GalleryParts

__all__ = [
    "KEY_PREFIX",
    "KeptProbe",
    "discard_probe",
    "forget_unstored_probe",
    "open_probe",
    "probe_key_name",
    "seal_probe",
    "sweep_pending_probes",
]

#: Key-store name prefix of the data keys of pending probes.
KEY_PREFIX = "facetrust:pending-probe:"

#: How long a probe's key may wait for its identification to be stored before the
#: sweep takes it for one that a crash left (a process killed between making the
#: key and committing the identification). An identify stores it within seconds.
UNSTORED_KEY_HOURS = 1


@dataclass(frozen=True)
class KeptProbe:
    """The opened probe of an identification awaiting review.

    Attributes
    ----------
    identification_id : str
    photo : bytes
        The encoded photo as it was searched.
    box : Box
        The detected face, in original-image pixels.
    delete_after : str
        ISO 8601 time by which the probe is deleted even if still pending.
    """

    identification_id: str
    photo: bytes
    box: Box
    delete_after: str


def probe_key_name(identification_id: str) -> str:
    """The key-store name of the data key sealing the probe of ``identification_id``."""
    return KEY_PREFIX + identification_id


def probe_label(identification_id: str) -> str:
    """The sealing label of a pending probe: binds the ciphertext to its identification."""
    return f"pending-probe:{identification_id}"


def seal_probe(
    parts: GalleryParts, identification_id: str, photo: bytes, box: Box, now: datetime
) -> PendingProbeRecord | None:
    """The sealed record of a probe to keep, or None when the policy keeps none.

    The probe's data key is created (and committed to the key store) first, so
    the record never exists without its key. A key whose identification was
    then not stored (the search failed) seals nothing.
    """
    hours = parts.config.pending_probe_hours
    if hours <= 0:
        return None
    key = parts.keyring.add_data_key(probe_key_name(identification_id), now=now)
    header = json.dumps({"box": [box.left, box.top, box.right, box.bottom]}).encode()
    sealed = crypto.seal(key, header + b"\n" + photo, probe_label(identification_id))
    until = now + timedelta(hours=hours)
    return PendingProbeRecord(identification_id, sealed, now.isoformat(), until.isoformat())


def forget_unstored_probe(parts: GalleryParts, identification_id: str) -> None:
    """Destroy the key :func:`seal_probe` made for a probe whose identification was
    then not stored (its write failed): the key seals nothing. Best effort: a key
    store that fails too leaves the key, which the retention sweep deletes once
    it is :data:`UNSTORED_KEY_HOURS` old (the caller's error is the news)."""
    with contextlib.suppress(FacetrustError):
        parts.keyring.destroy_data_keys([probe_key_name(identification_id)])


def open_probe(parts: GalleryParts, identification_id: str) -> KeptProbe | None:
    """The kept probe of ``identification_id``, or None when none is kept (any more)."""
    with parts.store.snapshot():
        record = parts.store.get_pending_probe(identification_id)
    if record is None or datetime.fromisoformat(record.delete_after) <= parts.now():
        return None
    key = parts.keyring.data_key(probe_key_name(identification_id))
    if key is None:  # shredded: the row goes at the next sweep
        return None
    plain = crypto.open_sealed(key, record.ciphertext, probe_label(identification_id))
    header, photo = plain.split(b"\n", 1)
    left, top, right, bottom = json.loads(header)["box"]
    return KeptProbe(identification_id, photo, Box(left, top, right, bottom), record.delete_after)


def discard_probe(parts: GalleryParts, identification_id: str, *, actor: str, reason: str) -> bool:
    """Destroy the probe's key, then delete its row; audited. False if nothing was kept."""
    destroyed = bool(parts.keyring.destroy_data_keys([probe_key_name(identification_id)]))
    parts.pause("probe:key-destroyed")
    with parts.store.transaction():
        deleted = parts.store.delete_pending_probe(identification_id)
        if deleted or destroyed:
            parts.audit.append(
                "pending-probe.deleted",
                actor=actor,
                identification_id=identification_id,
                reason=reason,
                key_destroyed=destroyed,
                row_deleted=deleted,
            )
    if deleted or destroyed:
        parts.keystore.reclaim()
        parts.store.reclaim()
    return deleted or destroyed


def sweep_pending_probes(parts: GalleryParts, *, actor: str) -> int:
    """Delete every probe past ``config.pending_probe_hours``, the keys left over by
    an interrupted decision (identification decided, or stored without its probe),
    the rows left over by an interrupted deletion (key destroyed, row not yet
    deleted: ciphertext no key opens) and the keys of identifications never stored
    (the process was killed after making the key, :data:`UNSTORED_KEY_HOURS` ago
    or more); returns how many went."""
    now = parts.now()
    unstored_since = now - timedelta(hours=UNSTORED_KEY_HOURS)
    with parts.store.snapshot():
        due = parts.store.pending_probes_due(now.isoformat())
        # the rows first: a row's key is made before the row, so a row read here
        # whose key the read below does not find had its key destroyed
        kept = parts.store.pending_probe_ids()
        keys = parts.keystore.made_at(KEY_PREFIX)
        shredded = [i for i in kept if probe_key_name(i) not in keys and i not in due]
        leftover, unstored = [], []
        for name, made_at in keys.items():
            identification_id = name[len(KEY_PREFIX):]
            if identification_id in due:
                continue
            if parts.store.get_identification(identification_id) is None:
                # a recent one may belong to an identify still writing in another process
                if made_at is not None and datetime.fromisoformat(made_at) < unstored_since:
                    unstored.append(identification_id)
            elif (
                parts.store.get_pending_probe(identification_id) is None
                or parts.store.identification_decided_at(identification_id) is not None
            ):
                leftover.append(identification_id)
    swept = 0
    for identification_id in due:
        swept += discard_probe(
            parts, identification_id, actor=actor, reason="review time limit passed"
        )
    for identification_id in leftover:
        swept += discard_probe(
            parts, identification_id, actor=actor,
            reason="identification decided; deletion was interrupted",
        )
    for identification_id in shredded:
        swept += discard_probe(
            parts, identification_id, actor=actor,
            reason="probe key destroyed; the deletion of its row was interrupted",
        )
    for identification_id in unstored:
        swept += discard_probe(
            parts, identification_id, actor=actor,
            reason="identification never stored; its identify was interrupted",
        )
    return swept
