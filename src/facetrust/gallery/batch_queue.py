"""Batch enrolment across machines: workers sharing one queue kept in the gallery's database.

Several ``facetrust enroll-batch --queue NAME`` processes (on one host or
many, each with the photo folder and the consent CSV at hand) work through the
same photos. The first to start puts every photo of the folder in the queue
(the others find them there); then each worker in turn

1. claims a few photos under a lease (:meth:`Store.claim_queued`: ``FOR
   UPDATE SKIP LOCKED`` on PostgreSQL, the single writer lock on SQLite), so
   no two live workers hold the same photo;
2. embeds them in its own process;
3. writes each subject's photos in one transaction that also marks their queue
   rows done (or failed, with the reason) -- the same per-subject write as
   :func:`~facetrust.gallery.batch_enrolment.enroll_batch`.

Each photo is enrolled exactly once by one mechanism, the keyed digest of its
source photo kept with each template (schema migration 3): inside the
writing transaction, under the database's write lock, a photo whose digest is
already among the subject's templates is only marked done. So a worker killed
at any point loses nothing (its uncommitted work rolled back; its claims come
back to the queue when their lease ends), and a slow worker whose lease ran
out while another took its photos over cannot enrol them twice.

A photo claimed ``max_attempts`` times by workers that all stopped before
finishing it (one that crashes every worker) is failed with the reason
``abandoned``. :func:`batch_status` tells done, in progress, waiting and
failed photos apart (``facetrust enroll-batch status``).
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..batch import ImageResult, process_image
from ..errors import FacetrustError, ImageError, Interrupted, InvalidParameter
from ..faces import Embedding
from ..images import read_image_file
from ..pipeline import DEFAULT_FACE_POLICY, FacePolicy
from ..store.base import QueuedPhoto
from ..text import readable_path, shown
from .batch_enrolment import (
    PHOTO_NOT_FOUND,
    BatchEnrolmentResult,
    BatchFailure,
    count_by_reason,
    failure_message,
    failure_reason,
    image_problem,
    write_subject,
)
from .checks import check_name
from .consent_csv import ConsentRow, UnmatchedRow, images_in, photo_path, read_consent_csv
from .core import Gallery

#: The accepted ranges (inclusive) of :func:`run_queue_worker`'s numbers: a lease of a
#: second to a day, claims of 1 to 1,000 photos, 1 to 100 attempts, looks at the queue
#: at most an hour apart.
LEASE_S_RANGE = (1.0, 86_400.0)
CLAIM_RANGE = (1, 1000)
MAX_ATTEMPTS_RANGE = (1, 100)
POLL_S_RANGE = (0.001, 3600.0)

#: States of a queued photo.
WAITING, CLAIMED, DONE, FAILED = "waiting", "claimed", "done", "failed"
NO_CONSENT = "no-consent-in-csv"
NO_CONSENT_MESSAGE = "The consent CSV has no row for this photo."


@dataclass(frozen=True)
class BatchQueueStatus:
    """Where a batch enrolment queue stands (``facetrust enroll-batch status``).

    Attributes
    ----------
    queue : str
    done, in_progress, waiting, failed : int
        Photos enrolled (or found enrolled before); claimed by a worker whose
        lease has not ended; not claimed yet, or claimed by a worker whose
        lease ended (claimed again by the next worker); not enrolled, for the
        reason given.
    failures : tuple of BatchFailure
        The failed photos (paths relative to the batch folder) and why.
    workers : dict of str to int
        Photos in progress per worker.
    leases : dict of str to str
        When each worker's last claim ends (ISO time, UTC): if the worker
        stopped without handing its photos back (killed), the other workers
        take them over then.
    """

    queue: str
    done: int
    in_progress: int
    waiting: int
    failed: int
    failures: tuple[BatchFailure, ...]
    workers: dict[str, int] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every photo of the queue."""
        return self.done + self.in_progress + self.waiting + self.failed

    @property
    def finished(self) -> bool:
        """Whether every photo is done or failed."""
        return self.in_progress == 0 and self.waiting == 0

    def by_reason(self) -> dict[str, int]:
        """Failed photos per reason, sorted by reason."""
        counts: dict[str, int] = {}
        for failure in self.failures:
            counts[failure.reason] = counts.get(failure.reason, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "total": self.total,
            "done": self.done,
            "in_progress": self.in_progress,
            "waiting": self.waiting,
            "failed": self.failed,
            "finished": self.finished,
            "failures_by_reason": self.by_reason(),
            "failures": [vars(f) for f in self.failures],
            "workers": self.workers,
            "leases": self.leases,
        }

    def table(self) -> str:
        """The counts, then the failed photos with their reasons, as plain text (each
        hidden character shown as ``⟨U+XXXX⟩``: :func:`facetrust.text.shown`)."""
        lines = [f"queue {self.queue}"]
        lines += [
            f"{label:<12} {count:>7}"
            for label, count in (
                ("done", self.done), ("in progress", self.in_progress),
                ("waiting", self.waiting), ("failed", self.failed), ("total", self.total),
            )
        ]
        if self.workers:
            lines.append("")
            lines.append("in progress, by worker (a killed worker's photos are taken over by "
                         "the others when its claim ends):")
            lines += [
                f"  {worker}: {count} photo{'' if count == 1 else 's'} until "
                f"{self.leases.get(worker, '?')[:19].replace('T', ' ')} UTC"
                for worker, count in self.workers.items()
            ]
        if self.failures:
            lines.append("")
            lines.append("failed photos:")
            lines += [f"  {f.photo}  [{f.reason}] {f.message}" for f in self.failures]
        # a photo's name is the choice of whoever dropped it in the folder (a queue's,
        # in a gallery from before queue names were checked, of whoever typed it): a
        # newline would forge a line, U+202E reverse one, an escape sequence drive the
        # operator's terminal
        return "\n".join(shown(line) for line in lines)


def default_worker_id() -> str:
    """``host:pid:random``: names a worker in the queue and the audit log."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def batch_status(gallery: Gallery, queue: str) -> BatchQueueStatus:
    """Where ``queue`` stands: photos done, in progress, waiting and failed (with reasons).

    Raises
    ------
    InvalidParameter
        No queue of that name in this gallery.
    """
    now = gallery.now().isoformat()
    with gallery.store.snapshot():
        rows = gallery.store.queued(queue)
        names = gallery.store.queue_names() if not rows else []
    if not rows:
        known = ", ".join(names) or "none"
        raise InvalidParameter(
            f"This gallery has no batch queue named {queue!r} (queues: {known}). Start one "
            "with `facetrust enroll-batch FOLDER --consents CSV --queue NAME`."
        )
    counts = {DONE: 0, CLAIMED: 0, WAITING: 0, FAILED: 0}
    workers: dict[str, int] = {}
    leases: dict[str, str] = {}
    failures = []
    for row in rows:
        state = row.state
        if state == CLAIMED and (row.lease_until or "") < now:
            state = WAITING  # its worker stopped: the next claim takes it over
        counts[state] += 1
        if state == CLAIMED and row.worker:
            workers[row.worker] = workers.get(row.worker, 0) + 1
            leases[row.worker] = max(leases.get(row.worker, ""), row.lease_until or "")
        if state == FAILED:
            failures.append(BatchFailure(row.photo, row.reason or "other", row.message or ""))
    return BatchQueueStatus(
        queue, counts[DONE], counts[CLAIMED], counts[WAITING], counts[FAILED],
        tuple(failures), dict(sorted(workers.items())), dict(sorted(leases.items())),
    )


def queue_names(base: Path) -> dict[str, Path]:
    """Every image under ``base`` by its name in a queue: its path under ``base``, links
    not resolved, readable (a name in bytes that are not UTF-8 has them as ``\\xNN``:
    the file is found again through this mapping, not by the name)."""
    return {readable_path(photo.relative_to(base).as_posix()): photo for photo in images_in(base)}


def fill_queue(
    gallery: Gallery, queue: str, base: Path, consents: dict[Path, ConsentRow],
    unmatched: Sequence[UnmatchedRow] = (), photos: dict[str, Path] | None = None,
) -> int:
    """Put every image under ``base`` in ``queue`` unless it holds it already; how many added.

    An image the consent CSV does not list goes in as failed (``no-consent-in-csv``),
    and so does each row of ``unmatched`` (a CSV row naming no photo:
    ``photo-not-found``), so that ``status`` shows them to everyone. One the
    queue holds as failed for either reason, and which is now a photo that
    ``consents`` (the current CSV) lists, goes back to waiting for its subject,
    and a ``photo-not-found`` row the current CSV no longer has is dropped: a
    corrected CSV or folder is taken up by the next worker of the same queue.
    ``photos`` is :func:`queue_names` of ``base`` when the caller has it.
    """
    now = gallery.now().isoformat()
    photos = queue_names(base) if photos is None else photos
    rows = []
    for name, photo in photos.items():
        row = consents.get(photo)
        rows.append(QueuedPhoto(
            queue, name, row.subject_id if row else None,
            WAITING if row else FAILED,
            reason=None if row else NO_CONSENT,
            message=None if row else NO_CONSENT_MESSAGE,
            updated_at=now,
        ))
    rows += [QueuedPhoto(queue, u.name, u.subject_id, FAILED, reason=PHOTO_NOT_FOUND,
                         message=u.message, updated_at=now) for u in unmatched]
    store = gallery.store
    with store.transaction():
        added = store.queue_photos(rows)
        failed = store.queued(queue, FAILED)
        for reason in (NO_CONSENT, PHOTO_NOT_FOUND):
            listed = {
                queued.photo: row.subject_id
                for queued in failed
                if queued.reason == reason
                and (found := photos.get(queued.photo)) is not None
                and (row := consents.get(found)) is not None
            }
            if listed:
                store.requeue_failed(queue, listed, reason=reason, at=now)
        # a row naming no photo that the current CSV no longer has was corrected
        still = {u.name for u in unmatched}
        store.drop_failed(queue, [
            queued.photo for queued in failed
            if queued.reason == PHOTO_NOT_FOUND and queued.photo not in still
            and not (base / queued.photo).is_file()
        ], reason=PHOTO_NOT_FOUND)
    return added


def run_queue_worker(
    gallery: Gallery,
    folder: str | os.PathLike[str],
    consents_csv: str | os.PathLike[str],
    *,
    queue: str,
    actor: str,
    worker: str | None = None,
    lease_s: float = 300.0,
    claim: int = 8,
    max_attempts: int = 3,
    check_duplicates: bool | None = None,
    poll_s: float = 2.0,
    face_policy: FacePolicy = DEFAULT_FACE_POLICY,
) -> BatchEnrolmentResult:
    """Work through ``queue`` with other workers until every photo is done or failed.

    Adds the photos of ``folder`` to the queue first (those already there are
    kept as they are), then claims, embeds and enrols ``claim`` photos at a
    time (see the module docstring). Returns when no photo is waiting or in
    progress: while other workers hold claims it waits, so that a killed
    worker's photos are taken over once their lease ends.

    Parameters
    ----------
    queue : str
        The queue's name, the same for every worker of one batch.
    worker : str, optional
        This worker's name in the queue (default: host, process id and a random part).
    lease_s : float
        Seconds a claim lasts, in [1, 86400]: another worker takes the photos
        over after it ends. Longer than embedding and writing ``claim`` photos takes.
    claim : int
        Photos claimed at a time, in [1, 1000].
    max_attempts : int
        Claims of one photo before it is failed as ``abandoned``, in [1, 100].
    check_duplicates : bool, optional
        As for :func:`~facetrust.gallery.batch_enrolment.enroll_batch`.
    poll_s : float
        Longest wait between looks at the queue while others hold every claim
        (seconds, at most 3600).
    face_policy : FacePolicy
        Which face of each photo to enrol (the product's default: ``"dominant"``).

    Returns
    -------
    BatchEnrolmentResult
        What this worker did (``already_enrolled``: photos it found enrolled
        before, e.g. by a worker whose lease ran out; ``failures``: those this
        worker failed, paths relative to the folder; ``failed_elsewhere``: the
        queue's other failed photos, see :func:`batch_status`).

    Raises
    ------
    InvalidParameter
        A bad folder, CSV, queue name, lease, claim size, attempt count or poll
        time (see the ``*_RANGE`` constants), before the queue is touched.
    """
    started = time.perf_counter()
    actor = check_name(actor, "actor")
    if not queue or not queue.strip():
        raise InvalidParameter(
            f"The 'queue' parameter of run_queue_worker must name the batch's queue (the "
            f"same for every worker of one batch). Got {queue!r} instead."
        )
    queue = check_name(queue, "queue")  # shown in status tables and hints, as typed
    _check_number("lease_s", lease_s, LEASE_S_RANGE)
    _check_number("claim", claim, CLAIM_RANGE)
    _check_number("max_attempts", max_attempts, MAX_ATTEMPTS_RANGE)
    _check_number("poll_s", poll_s, POLL_S_RANGE)
    worker = check_name(worker or default_worker_id(), "worker")
    if check_duplicates is None:
        check_duplicates = gallery.config.duplicate_policy == "refuse"
    base = photo_path(folder)
    if not base.is_dir():
        raise InvalidParameter(f"The photo folder {str(base)!r} does not exist or is not a folder.")
    read = read_consent_csv(consents_csv, base)
    consents = read.rows
    photos = queue_names(base)
    fill_queue(gallery, queue, base, consents, read.unmatched, photos)
    pipeline = gallery.pipeline
    totals = {"enrolled": 0, "already": 0, "subjects": 0}
    failures: list[BatchFailure] = []
    refused: list[dict[str, str]] = []
    try:
        while True:
            now = gallery.now()
            with gallery.store.transaction():
                claimed = gallery.store.claim_queued(
                    queue, worker, now=now.isoformat(),
                    lease_until=(now + timedelta(seconds=lease_s)).isoformat(),
                    limit=int(claim), max_attempts=int(max_attempts),
                )
            if not claimed:
                status = batch_status(gallery, queue)
                if status.finished:
                    failed_elsewhere = max(0, status.failed - len(failures))
                    break
                time.sleep(poll_s if status.waiting else min(poll_s, lease_s))
                continue
            results = [
                (q, process_image(pipeline, str(_located(q.photo, photos, base)), face_policy))
                for q in claimed
            ]
            for subject_id, group in _by_subject(results):
                _write_group(gallery, queue, base, photos, consents, subject_id, group, actor,
                             check_duplicates, totals, failures, refused)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where the caller turns it into one
        # What this worker claimed goes to the others now, not when the lease ends.
        with gallery.store.transaction():
            released = gallery.store.release_claims(queue, worker, at=gallery.now().isoformat())
        _audit_worker(gallery, actor, queue, worker, totals, failures, refused, stopped=True)
        enrolled = totals["enrolled"]
        raise Interrupted(
            f"Queue worker {worker} stopped before queue {queue} was finished, after "
            f"enrolling {enrolled} photo{'' if enrolled == 1 else 's'} (kept); the "
            f"{released} photo{'' if released == 1 else 's'} it held went back to the queue "
            "for the other workers. Run the same command again to go on, and see "
            f"`facetrust enroll-batch status --queue {queue}`."
        ) from None
    by_reason = _audit_worker(gallery, actor, queue, worker, totals, failures, refused)
    return BatchEnrolmentResult(
        totals["enrolled"], totals["already"], totals["subjects"], tuple(failures),
        time.perf_counter() - started, by_reason, queue=queue,
        failed_elsewhere=failed_elsewhere,
    )


def _audit_worker(
    gallery: Gallery, actor: str, queue: str, worker: str, totals: dict[str, int],
    failures: list[BatchFailure], refused: list[dict[str, str]], *, stopped: bool = False,
) -> dict[str, int]:
    """A queue worker's summary audit event (``stopped``: interrupted before the queue was
    finished); its failures by reason."""
    by_reason = count_by_reason(failures)
    extra: dict[str, Any] = {"stopped": True} if stopped else {}
    gallery.audit.append(
        "enrol.batch",
        actor=actor,
        subject_ids=[r["subject_id"] for r in refused],
        queue=queue,
        worker=worker,
        photos_enrolled=totals["enrolled"],
        photos_already_enrolled=totals["already"],
        subjects_written=totals["subjects"],
        failures_by_reason=by_reason,
        refused_subjects=refused,
        **extra,
    )
    return by_reason


def _check_number(name: str, value: object, bounds: tuple[float, float]) -> None:
    """Refuse ``value`` unless it is a finite number within ``bounds`` (an integer when
    the bounds are), before anything is written."""
    low, high = bounds
    integer = isinstance(low, int)
    kind = int if integer else int | float
    if (isinstance(value, bool) or not isinstance(value, kind)
            or not math.isfinite(value) or not low <= value <= high):
        raise InvalidParameter(
            f"The {name!r} parameter of run_queue_worker must be "
            f"{'an integer' if integer else 'a finite number'} in [{low}, {high}]. "
            f"Got {value!r} instead."
        )


def _by_subject(
    results: list[tuple[QueuedPhoto, ImageResult]],
) -> Iterator[tuple[str, list[tuple[QueuedPhoto, ImageResult]]]]:
    """The claimed photos grouped by subject (claims come in subject order)."""
    groups: dict[str, list[tuple[QueuedPhoto, ImageResult]]] = {}
    for item in results:
        groups.setdefault(item[0].subject_id or "", []).append(item)
    yield from groups.items()


def _located(name: str, photos: dict[str, Path], base: Path) -> Path:
    """The file of the queue's photo ``name``: found in this worker's look at the folder,
    else (a photo another worker put in the queue since) under ``base``."""
    return photos.get(name) or base / name


def _write_group(
    gallery: Gallery,
    queue: str,
    base: Path,
    photos: dict[str, Path],
    consents: dict[Path, ConsentRow],
    subject_id: str,
    group: list[tuple[QueuedPhoto, ImageResult]],
    actor: str,
    check_duplicates: bool,
    totals: dict[str, int],
    failures: list[BatchFailure],
    refused: list[dict[str, str]],
) -> None:
    """One subject's claimed photos: enrolled and marked done in one transaction, or failed."""
    store = gallery.store
    failed: list[BatchFailure] = []
    ready: list[tuple[str, Embedding, bytes]] = []
    row: ConsentRow | None = None
    for queued, result in group:
        path = _located(queued.photo, photos, base)
        row = consents.get(path)
        problem = image_problem(result)
        if row is None or row.subject_id != subject_id:
            problem = (NO_CONSENT, "This worker's consent CSV has no row for this "
                       "photo, or names another subject: give every worker the same CSV.")
        if problem is None:
            try:
                raw = read_image_file(path, gallery.pipeline.settings.max_bytes)
                ready.append((queued.photo, result.faces[0].embedding, raw))
            except ImageError as error:  # replaced or removed since it was embedded
                problem = (failure_reason(error), failure_message(error))
        if problem is not None:
            failed.append(BatchFailure(queued.photo, *problem))
    at = gallery.now().isoformat()
    try:
        with gallery.batch():
            for failure in failed:
                store.finish_queued(queue, [failure.photo], state=FAILED, at=at,
                                    reason=failure.reason, message=failure.message)
            if ready and row is not None:
                # under the write lock: what another worker enrolled meanwhile is seen here
                known = gallery.enrolled_sources(subject_id)
                new = [item for item in ready if not known.contains(item[2])]
                if new:
                    write_subject(gallery, row, [e for _, e, _ in new],
                                  [raw for _, _, raw in new], actor, check_duplicates)
                store.finish_queued(queue, [p for p, _, _ in ready], state=DONE, at=at)
                totals["already"] += len(ready) - len(new)
                totals["enrolled"] += len(new)
                totals["subjects"] += 1 if new else 0
    except FacetrustError as error:
        reason = failure_reason(error)
        failed += [BatchFailure(p, reason, failure_message(error)) for p, _, _ in ready]
        refused.append({"subject_id": subject_id, "reason": reason,
                        "error": type(error).__name__})
        with store.transaction():
            for failure in failed:
                store.finish_queued(queue, [failure.photo], state=FAILED, at=at,
                                    reason=failure.reason, message=failure.message)
    failures.extend(failed)
