"""``facetrust init``, ``subject``, ``consent``, ``enroll``, ``identify``, ``review``,
``forget`` and ``retention``: the consented gallery from the shell.

Each command opens the gallery, calls one library method and prints its
result as JSON. The gallery is found from ``--gallery`` (config file or
folder), else ``FACETRUST_GALLERY``, else the current folder.
"""

from __future__ import annotations

import getpass
import hashlib
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import AuthorizationError
from ..gallery import Gallery
from ..gallery.config import (
    DEFAULT_RETENTION_DAYS,
    DEFAULT_REVIEW_QUORUM,
    GALLERY_ENV,
    INDEX_KINDS,
)
from ..gallery.subjects import MAX_PAGE, expiry_after_days
from ..index import DEFAULT_EXACT_THRESHOLD
from ..pipeline import FacePolicy
from ..store.postgres import redact_url
from ..text import printable_json
from ..times import parse_time
from .faces import face_option

gallery_option = click.option(
    "--gallery",
    "gallery_path",
    type=click.Path(),
    default=None,
    envvar=GALLERY_ENV,
    help="Gallery config file or folder (default: the current folder).",
)
actor_option = click.option(
    "--actor",
    envvar="FACETRUST_ACTOR",
    default=lambda: getpass.getuser(),
    show_default="your user name",
    help="Who performs the action (recorded in the audit log).",
)


def emit(record: Any) -> None:
    """Print a result (anything with ``to_dict()``, or a plain value) as JSON."""
    value = record.to_dict() if hasattr(record, "to_dict") else record
    click.echo(printable_json(value, indent=2))


key_option = click.option(
    "--key",
    "api_key",
    envvar="FACETRUST_API_KEY",
    default=None,
    help="Your API key (ft_<id>_<secret>; or set FACETRUST_API_KEY). The audit log records "
    "the key, not a typed name.",
)


def principal(
    gallery: Gallery,
    gallery_path: str | None,
    api_key: str | None,
    operation: str,
    *,
    kind: str,
    purpose: str | None = None,
    subjects: list[str] | None = None,
    **fields: Any,
) -> str:
    """The audit actor (``key:<id>``) of the API key ``api_key``, if its role may ``operation``.

    A refusal is audited in ``gallery`` as ``<kind>.refused`` (the gallery's own
    kind of the operation), as the gallery audits its own refusals: with the
    key's actor when the key is valid but of the wrong role, else with
    ``cli:<user>`` and the id of a well-formed key, unverified.

    Raises
    ------
    AuthorizationError
        No key, or a key that is unknown, revoked, malformed or of the wrong role.
    """
    from ..gallery.refusals import record_refusal
    from ..service.apikeys import parse_key
    from ..service.auth import role_refusal
    from .service import api_keys

    actor = f"cli:{getpass.getuser()}"
    presented = parse_key(api_key) if api_key else None
    extra = dict(fields)
    if presented is not None:
        extra["presented_key_id"] = presented[0]
    try:
        if not api_key:
            raise AuthorizationError(
                f"'{operation}' is done by an authenticated operator: pass your API key with "
                "--key or FACETRUST_API_KEY. An admin creates one with "
                "`facetrust keys create --role operator --name NAME`."
            )
        key = api_keys(gallery_path).authenticate(api_key)
        if key is None:
            raise AuthorizationError(
                "The API key is unknown, revoked or malformed. Ask an admin for a new key."
            )
        actor = key.actor
        extra.pop("presented_key_id", None)
        refusal = role_refusal(key, operation)
        if refusal is not None:
            raise AuthorizationError(refusal)
    except AuthorizationError as error:
        record_refusal(gallery.audit, kind, error, actor=actor, purpose=purpose,
                       subjects=subjects or [], operation=operation, **extra)
        raise
    return actor


@click.command()
@click.argument("folder", type=click.Path(file_okay=False), default=".")
@click.option(
    "--purpose",
    "purposes",
    multiple=True,
    help="A purpose consent can be given for (repeat). Default: access-control, boarding, "
    "photo-library.",
)
@click.option("--retention-days", type=int, default=None, show_default=str(DEFAULT_RETENTION_DAYS))
@click.option("--review-quorum", type=int, default=None, show_default=str(DEFAULT_REVIEW_QUORUM))
@click.option(
    "--searcher-may-review",
    is_flag=True,
    default=None,
    help="Let the operator who ran an identification be one of its reviewers (default: not).",
)
@click.option(
    "--pending-probe-hours",
    type=click.FloatRange(0, 720),
    default=None,
    show_default="24",
    help="Longest time the photo of an identification awaiting review is kept, encrypted, for "
    "its reviewers (deleted on decision; 0 keeps none).",
)
@click.option("--duplicate-policy", type=click.Choice(["warn", "refuse"]), default=None)
@click.option("--operating-point", default=None, help="Threshold name from the calibration table.")
@click.option(
    "--database-url",
    default=None,
    help="postgresql://... : keep the gallery in this PostgreSQL database (default: a SQLite "
    "file in FOLDER). FACETRUST_DATABASE_URL also sets it, without saving it in the config.",
)
@click.option(
    "--keystore-url",
    default=None,
    help="postgresql://... : keep the data keys in this (other) database (default: a SQLite "
    "file in FOLDER).",
)
@click.option(
    "--server-side-search",
    is_flag=True,
    default=None,
    help="PostgreSQL only: search in the database with pgvector (stores rotated, unencrypted "
    "vectors there).",
)
@click.option(
    "--index-kind",
    type=click.Choice(list(INDEX_KINDS)),
    default=None,
    help="How searches find the nearest templates: auto (exact below --index-exact-below "
    "templates, the quantized scan above), exact, quantized, or hnsw (needs facetrust[index]).",
)
@click.option(
    "--index-exact-below",
    type=int,
    default=None,
    show_default=str(DEFAULT_EXACT_THRESHOLD),
    help="Gallery size from which 'auto' switches to the quantized scan.",
)
def init(
    folder: str,
    purposes: tuple[str, ...],
    retention_days: int | None,
    review_quorum: int | None,
    searcher_may_review: bool | None,
    pending_probe_hours: float | None,
    duplicate_policy: str | None,
    operating_point: str | None,
    database_url: str | None,
    keystore_url: str | None,
    server_side_search: bool | None,
    index_kind: str | None,
    index_exact_below: int | None,
) -> None:
    """Create a gallery in FOLDER (default: here): database, key file (0600) and config."""
    gallery, config_path = Gallery.init_folder(
        folder,
        purposes=purposes or None,
        retention_days=retention_days,
        review_quorum=review_quorum,
        searcher_may_review=searcher_may_review,
        pending_probe_hours=pending_probe_hours,
        duplicate_policy=duplicate_policy,
        operating_point=operating_point,
        database_url=database_url,
        keystore_url=keystore_url,
        server_side_search=server_side_search,
        index_kind=index_kind,
        index_exact_below=index_exact_below,
    )
    with gallery:
        emit(
            {
                "config": str(config_path),
                "database": redact_url(gallery.config.database_url or str(gallery.config.db_path)),
                "keystore": redact_url(
                    gallery.config.keystore_url or str(gallery.config.keystore_path)
                ),
                "key_file": str(gallery.config.key_file),
                "gallery_id": gallery.gallery_id,
                "next": "facetrust subject add ID; facetrust consent grant ID --purpose ...",
            }
        )


@click.group()
def subject() -> None:
    """Add, list and show subjects."""


@subject.command("add")
@click.argument("subject_id", required=False)
@click.option("--name", "display_name", default=None, help="Optional display name.")
@gallery_option
@actor_option
def subject_add(
    subject_id: str | None, display_name: str | None, gallery_path: str | None, actor: str
) -> None:
    """Register a subject (a random id if SUBJECT_ID is omitted)."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.add_subject(subject_id, display_name=display_name, actor=actor))


@subject.command("list")
@click.option("--query", default=None,
              help="Only subjects whose id or display name contains this (any case).")
@click.option("--after", default=None, help="The previous page's next_after, for the next page.")
@click.option("--limit", type=click.IntRange(1, MAX_PAGE), default=50, show_default=True,
              help=f"Most subjects on the page (at most {MAX_PAGE}).")
@gallery_option
def subject_list(
    query: str | None, after: str | None, limit: int, gallery_path: str | None
) -> None:
    """List one page of the subjects not erased, by increasing id.

    Prints {"subjects": [...], "next_after": ...}; when more subjects follow,
    the command for the next page is printed to stderr.
    """
    with Gallery.find(gallery_path) as gallery:
        page = gallery.find_subjects(query, after=after, limit=limit)
    emit(page)
    if page.next_after is not None:
        again = ["facetrust", "subject", "list", "--after", page.next_after]
        if query:
            again += ["--query", query]
        if limit != 50:
            again += ["--limit", str(limit)]
        click.echo(f"More subjects follow: {shlex.join(again)}", err=True)


@subject.command("show")
@click.argument("subject_id")
@gallery_option
@actor_option
def subject_show(subject_id: str, gallery_path: str | None, actor: str) -> None:
    """Show one subject: consent history, template count, photos kept, retention date.

    Each view is recorded in the audit log (kind subject.view) with ACTOR.
    """
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.view_subject(subject_id, actor=actor))


@click.group()
def consent() -> None:
    """Grant, withdraw and show consents."""


@consent.command("grant")
@click.argument("subject_id")
@click.option("--purpose", "purposes", multiple=True, required=True, help="Repeat per purpose.")
@click.option(
    "--expires", default=None,
    help="Expiry, ISO date (00:00 UTC that day) or time (UTC if no zone).",
)
@click.option(
    "--days", type=click.IntRange(min=1), default=None, help="Or: valid this many days from now."
)
@click.option("--evidence-ref", required=True, help="Id of the signed form or other proof.")
@click.option(
    "--evidence-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The evidence file; its SHA-256 is recorded (the file is not stored).",
)
@click.option("--evidence-sha256", default=None, help="Or: the evidence's SHA-256 in hex.")
@click.option("--notice-version", required=True, help="Version of the notice/policy shown.")
@gallery_option
@actor_option
def consent_grant(
    subject_id: str,
    purposes: tuple[str, ...],
    expires: str | None,
    days: int | None,
    evidence_ref: str,
    evidence_file: str | None,
    evidence_sha256: str | None,
    notice_version: str,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Record SUBJECT_ID's consent to PURPOSEs until --expires (or for --days)."""
    if (expires is None) == (days is None):
        raise click.UsageError("give exactly one of --expires or --days")
    if (evidence_file is None) == (evidence_sha256 is None):
        raise click.UsageError("give exactly one of --evidence-file or --evidence-sha256")
    digest = evidence_sha256 or hashlib.sha256(Path(str(evidence_file)).read_bytes()).hexdigest()
    with Gallery.find(gallery_path) as gallery:
        until = (parse_time(expires, "expires") if expires is not None
                 else expiry_after_days(gallery.now(), days or 0))
        emit(
            gallery.grant_consent(
                subject_id,
                purposes,
                expires_at=until,
                evidence_ref=evidence_ref,
                evidence_sha256=digest,
                notice_version=notice_version,
                actor=actor,
            )
        )


@consent.command("withdraw")
@click.argument("subject_id")
@click.option("--consent-id", default=None, help="One consent (default: every active one).")
@click.option("--reason", default="withdrawn by the subject", show_default=True)
@gallery_option
@actor_option
def consent_withdraw(
    subject_id: str, consent_id: str | None, reason: str, gallery_path: str | None, actor: str
) -> None:
    """Withdraw consent; with none left active, the subject's biometric data is erased."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.withdraw_consent(subject_id, consent_id, actor=actor, reason=reason))


@consent.command("show")
@click.argument("subject_id")
@gallery_option
@actor_option
def consent_show(subject_id: str, gallery_path: str | None, actor: str) -> None:
    """Show SUBJECT_ID's consent history.

    Each view is recorded in the audit log (kind subject.view) with ACTOR.
    """
    with Gallery.find(gallery_path) as gallery:
        emit([c.to_dict() for c in gallery.view_subject(subject_id, actor=actor).consents])


@click.command()
@click.argument("subject_id")
@click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--keep-photos", is_flag=True, help="Also store the photos (encrypted).")
@face_option
@gallery_option
@actor_option
def enroll(
    subject_id: str,
    photos: tuple[str, ...],
    keep_photos: bool,
    face_policy: FacePolicy,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Enrol SUBJECT_ID from one or more PHOTOS (needs an active consent)."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.enroll(subject_id, list(photos), actor=actor, keep_photos=keep_photos,
                            face_policy=face_policy))


@click.command()
@click.argument("probe", type=click.Path(exists=True, dir_okay=False))
@click.option("--purpose", default=None, help="Required: the consented purpose of the search.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="Most candidates.")
@click.option("--case-ref", default=None,
              help="Required: the case, ticket or gate this search belongs to.")
@face_option
@key_option
@gallery_option
@actor_option
def identify(
    probe: str,
    purpose: str | None,
    k: int,
    case_ref: str | None,
    face_policy: FacePolicy,
    api_key: str | None,
    gallery_path: str | None,
    actor: str,
) -> None:
    """Search the gallery (1:N) for the face in PROBE. Exit 0 with candidates, 1 without.

    Candidates need human review (`facetrust review`) before they count as an
    identification. With --key (or FACETRUST_API_KEY) the search is recorded
    under the key, so the reviewers' policy can tell the searcher apart.
    """
    with Gallery.find(gallery_path) as gallery:
        if api_key:
            actor = principal(gallery, gallery_path, api_key, "identify", kind="identify",
                              purpose=purpose, case_ref=case_ref)
        result = gallery.identify(probe, purpose=purpose, actor=actor, k=k, case_ref=case_ref,
                                  face_policy=face_policy)
    emit(result)
    sys.exit(0 if result.candidates else 1)


@click.command()
@click.argument("identification_id")
@click.argument("subject_id")
@key_option
@click.option("--reviewer", hidden=True, default=None)
@click.option("--reject", is_flag=True, help="Reject the candidate instead of confirming it.")
@click.option("--note", default=None)
@gallery_option
def review(
    identification_id: str,
    subject_id: str,
    api_key: str | None,
    reviewer: str | None,
    reject: bool,
    note: str | None,
    gallery_path: str | None,
) -> None:
    """Confirm (or --reject) candidate SUBJECT_ID of an identification, as the holder of --key.

    The quorum counts distinct API keys, as in the service; by default the
    operator who ran the search may not review it (gallery policy
    searcher_may_review).
    """
    if reviewer is not None:
        raise click.UsageError(
            "reviewers are authenticated, not named: drop --reviewer and pass your operator "
            "API key with --key (or FACETRUST_API_KEY)"
        )
    with Gallery.find(gallery_path) as gallery:
        actor = principal(gallery, gallery_path, api_key, "review_candidate", kind="review",
                          subjects=[subject_id], identification_id=identification_id,
                          decision="reject" if reject else "confirm")
        emit(
            gallery.review(
                identification_id,
                subject_id,
                reviewer=actor,
                decision="reject" if reject else "confirm",
                note=note,
            )
        )


@click.command()
@click.argument("subject_id")
@click.option("--reason", default="erasure requested", show_default=True)
@gallery_option
@actor_option
def forget(subject_id: str, reason: str, gallery_path: str | None, actor: str) -> None:
    """Erase SUBJECT_ID for good: data key destroyed, templates and photos deleted."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.forget(subject_id, actor=actor, reason=reason))


@click.group()
def retention() -> None:
    """Retention: purge what may no longer be kept."""


@retention.command("sweep")
@gallery_option
@actor_option
def retention_sweep(gallery_path: str | None, actor: str) -> None:
    """Erase subjects past retention or without active consent (audited)."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.sweep_retention(actor=actor))


@click.group("index")
def index_group() -> None:
    """The gallery's search index: what answers searches, and saving it for restarts."""


@index_group.command("info")
@gallery_option
def index_info(gallery_path: str | None) -> None:
    """Per model: the index kind answering searches, templates, and whether it was loaded."""
    with Gallery.find(gallery_path) as gallery:
        emit(gallery.index_info())


@index_group.command("save")
@gallery_option
@actor_option
def index_save(gallery_path: str | None, actor: str) -> None:
    """Write the approximate index, encrypted, so a restart loads it (run after erasures).

    Recorded in the audit log (kind index.save) with ACTOR.
    """
    with Gallery.find(gallery_path) as gallery:
        emit({"written": [str(path) for path in gallery.save_index(actor=actor)]})


COMMANDS = [
    init,
    subject,
    consent,
    enroll,
    identify,
    review,
    forget,
    retention,
    index_group,
]
