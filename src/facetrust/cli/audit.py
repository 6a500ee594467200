"""``facetrust audit verify|export|head``: check and read the audit log."""

from __future__ import annotations

import sys
from typing import TextIO

import click

from ..gallery import Gallery
from ..text import is_whole_number
from ..times import parse_time
from .gallery import emit, gallery_option


@click.group()
def audit() -> None:
    """Verify, export and anchor the tamper-evident audit log."""


@audit.command("verify")
@click.option(
    "--expect-head",
    default=None,
    help="SEQ:MAC of a head anchored earlier outside the database (see `audit head`).",
)
@gallery_option
def audit_verify(expect_head: str | None, gallery_path: str | None) -> None:
    """Check every event; name the first broken one. Exit 0 intact, 1 broken."""
    anchor = None
    if expect_head is not None:
        seq, _, mac = expect_head.partition(":")
        if not is_whole_number(seq) or not mac:
            raise click.BadParameter("expected SEQ:MAC", param_hint="--expect-head")
        anchor = (int(seq), mac)
    with Gallery.find(gallery_path) as gallery:
        report = gallery.audit.verify(anchor)
    if report.ok:
        click.echo(f"audit log intact: {report.events_checked} events, head {report.head_seq}")
    else:
        click.echo(
            f"AUDIT LOG BROKEN {report.where}: {report.reason}", err=True
        )
    sys.exit(0 if report.ok else 1)


@audit.command("export")
@click.option("--output", "-o", type=click.File("w"), default="-", help="File (default: stdout).")
@click.option("--subject", default=None)
@click.option("--actor", default=None)
@click.option("--purpose", default=None)
@click.option("--kind", default=None, help="e.g. identify, enrol, erase, consent.grant.")
@click.option("--since", default=None, help="ISO time, inclusive.")
@click.option("--until", default=None, help="ISO time, exclusive.")
@gallery_option
def audit_export(
    output: TextIO,
    subject: str | None,
    actor: str | None,
    purpose: str | None,
    kind: str | None,
    since: str | None,
    until: str | None,
    gallery_path: str | None,
) -> None:
    """Write events as JSON lines, filtered by subject, actor, purpose, kind and time."""
    with Gallery.find(gallery_path) as gallery:
        gallery.audit.export(
            output,
            subject=subject,
            actor=actor,
            purpose=purpose,
            kind=kind,
            since=parse_time(since, "since") if since else None,
            until=parse_time(until, "until") if until else None,
        )


@audit.command("head")
@gallery_option
def audit_head(gallery_path: str | None) -> None:
    """Print the keyed head checkpoint; anchor it outside the database."""
    with Gallery.find(gallery_path) as gallery:
        head = gallery.audit.head()
    emit({"seq": head.seq, "mac": head.mac, "anchor": f"{head.seq}:{head.mac}"})


COMMANDS = [audit]
