"""``facetrust enroll-batch``: batch enrolment from a folder and a consent CSV.

``facetrust enroll-batch FOLDER --consents CSV`` (the ``run`` command, the
default) enrols on every core of this machine; with ``--queue NAME`` it is one
worker of many sharing a queue in the gallery's database, on this host or
others. ``facetrust enroll-batch status`` shows where a queue stands.
"""

from __future__ import annotations

import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import click

from ..batch import MAX_WORKERS
from ..errors import InvalidParameter
from ..gallery import Gallery
from ..gallery.batch_queue import CLAIM_RANGE, LEASE_S_RANGE
from ..pipeline import FacePolicy
from .faces import face_option
from .gallery import actor_option, emit, gallery_option


class DefaultCommandGroup(click.Group):
    """A group whose arguments go to its default command unless they name another one.

    ``facetrust enroll-batch FOLDER ...`` is ``facetrust enroll-batch run FOLDER ...``.
    """

    def __init__(self, *args: Any, default_command: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default_command = default_command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


class FiniteFloatRange(click.FloatRange):
    """A float range that also refuses ``nan`` (which compares false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, a service manager stopping the job) stops a batch as Ctrl-C does:
    the photos being written roll back, the workers end, and the batch says how to resume."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.group("enroll-batch", cls=DefaultCommandGroup, default_command="run")
def enroll_batch() -> None:
    """Enrol a folder of consented photos: on this machine, or as workers sharing a queue.

    `facetrust enroll-batch FOLDER --consents CSV` runs `enroll-batch run`;
    `facetrust enroll-batch status --queue NAME` shows a queue's progress.
    """


@enroll_batch.command("run")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--consents",
    "consents_csv",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CSV: photo (file or subject folder), subject_id, display_name, purposes (a;b), "
    "expires, evidence_ref, evidence_sha256, notice_version.",
)
@click.option(
    "--queue",
    default=None,
    help="Work as one of several workers sharing this queue in the gallery's database "
    "(start one per core, on any host that sees the gallery and the photos).",
)
@click.option("--lease", "lease_s", type=FiniteFloatRange(*LEASE_S_RANGE), default=300.0,
              show_default=True,
              help="With --queue: seconds a claim lasts before another worker may take it over.")
@click.option("--claim", type=click.IntRange(*CLAIM_RANGE), default=8, show_default=True,
              help="With --queue: photos claimed at a time.")
@click.option("--worker-id", default=None,
              help="With --queue: this worker's name (default: host:pid:random).")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None,
              help="Without --queue: embedding processes (default: cores).")
@click.option(
    "--check-duplicates/--no-check-duplicates",
    default=None,
    help="Search each new face for other subjects (default: only if the gallery refuses "
    "duplicates).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@face_option
@gallery_option
@actor_option
def run(
    folder: str,
    consents_csv: str,
    queue: str | None,
    lease_s: float,
    claim: int,
    worker_id: str | None,
    workers: int | None,
    check_duplicates: bool | None,
    no_progress: bool,
    face_policy: FacePolicy,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Enrol every photo in FOLDER listed in the consent CSV; resumable.

    Prints the failures by reason as a table on stderr and the result as JSON.
    Re-run after an interruption: photos enrolled before are skipped. With
    --queue, each worker claims photos from the shared queue until none is
    left, and a killed worker's photos go to the others when its lease ends.
    """
    from ..gallery.batch_enrolment import enroll_batch as run_batch
    from ..gallery.batch_queue import run_queue_worker

    if queue is not None and workers is not None:
        raise InvalidParameter(
            "--workers applies without --queue only: a queue worker embeds in its own "
            "process. Start one `enroll-batch --queue` worker per core instead."
        )
    with Gallery.find(gallery_path) as gallery, sigterm_as_ctrl_c():
        if queue is None:
            result = run_batch(
                gallery, folder, consents_csv, actor=actor, workers=workers,
                progress=not no_progress, check_duplicates=check_duplicates,
                face_policy=face_policy,
            )
        else:
            result = run_queue_worker(
                gallery, folder, consents_csv, queue=queue, actor=actor, worker=worker_id,
                lease_s=lease_s, claim=claim, check_duplicates=check_duplicates,
                face_policy=face_policy,
            )
    click.echo(result.table(), err=True)
    emit(result)


@enroll_batch.command("status")
@click.option("--queue", default=None,
              help="The queue (default: the gallery's only one).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@gallery_option
def status(queue: str | None, as_json: bool, gallery_path: str | None) -> None:
    """Show a batch queue's photos done, in progress, waiting and failed (with reasons)."""
    from ..gallery.batch_queue import batch_status

    with Gallery.find(gallery_path) as gallery:
        if queue is None:
            with gallery.store.snapshot():
                names = gallery.store.queue_names()
            if len(names) > 1:
                raise InvalidParameter(
                    f"Name the queue with --queue: this gallery has the queues {', '.join(names)}."
                )
            if not names:
                raise InvalidParameter(
                    "This gallery has no batch queue yet: `status` follows batches run with "
                    "--queue. A run without --queue prints its result when it ends and records "
                    "it in the audit log: see `facetrust audit export --kind enrol.batch`."
                )
            queue = names[0]
        result = batch_status(gallery, queue)
    if as_json:
        emit(result)
    else:
        click.echo(result.table())


COMMANDS = [enroll_batch]
