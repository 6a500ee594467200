"""An erasure killed half-way (SIGKILL right after the subject's data key was destroyed,
before the store change): the subject is out of every search and review at once, the
audit log says an erasure began, and the retention sweep finishes it, on SQLite and on
PostgreSQL with the in-database (pgvector) search."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust.errors import ReviewClosed, UnknownSubject
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from installed_command import installed_runner, kill_when_paused

KOFI = "Kofi_Annan"

#: Opens the gallery with a hook that stops at ``stage`` (the process is then killed).
VICTIM = r"""
import pathlib, sys, time
from facetrust.gallery import Gallery

folder, flag, stage = sys.argv[1:4]

def pause(reached):
    if reached == stage:
        pathlib.Path(flag).write_text(reached)
        time.sleep(120)

gallery = Gallery.find(folder, _hook=pause)
gallery.forget("Kofi_Annan", actor="dpo", reason="Art. 17 request")
"""


def kill_at(folder: Path, stage: str, tmp_path: Path) -> None:
    """Run ``forget`` in another process and SIGKILL it once it reaches ``stage``."""
    kill_when_paused(VICTIM, [str(folder), stage], tmp_path / "paused")


@pytest.mark.slow  # a real subprocess killed mid-erasure, then the installed command
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_erasure_killed_after_the_key_went_is_finished_by_the_sweep(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    folder = tmp_path / "gallery"
    settings = {}
    if backend == "postgres":
        postgres_url: Callable[[], str] = request.getfixturevalue("postgres_url")
        settings = {"database_url": postgres_url(), "keystore_url": postgres_url(),
                    "server_side_search": True}
    gallery, _ = Gallery.init_folder(folder, **settings)
    with gallery:
        for name, paths in identities.items():
            gallery.add_subject(name, display_name=name.replace("_", " "), actor="registrar")
            gallery.grant_consent(
                name, ["boarding"], expires_at=gallery.now() + timedelta(days=365),
                evidence_ref=f"form-{name}", evidence_sha256="ab" * 32, notice_version="v1",
                actor="registrar",
            )
            gallery.enroll(name, [embeddings[p] for p in paths[:2]], actor="registrar")
        pending = gallery.identify(identities[KOFI][3], purpose="boarding", actor="officer",
                                   case_ref="C-1")
        assert [c.subject_id for c in pending.candidates] == [KOFI]

    kill_at(folder, "erase:key-destroyed", tmp_path)

    with Gallery.find(folder) as gallery:
        assert gallery.keystore.get_key(KOFI) is None  # the key went before the kill
        # out of every search and review at once, whichever search runs
        found = gallery.identify(embeddings[identities[KOFI][2]], purpose="boarding",
                                 actor="officer", k=10, case_ref="C-2")
        assert KOFI not in [c.subject_id for c in found.candidates]
        # its only candidate gone, the pending identification is closed
        with pytest.raises(ReviewClosed, match="closed because none of its candidates"):
            gallery.review(pending.identification_id, KOFI, reviewer="alice")
        # the audit log says an erasure began and what it was to do
        (started,) = gallery.audit.events(kind="erase.started")
        assert started.subject_ids == (KOFI,) and started.actor == "dpo"
        assert started.fields["subject_forgotten"] is True
        assert started.fields["reason"] == "Art. 17 request"
        assert gallery.audit.verify().ok

    facetrust = installed_runner(folder)
    facetrust("retention", "sweep")  # the hourly sweep finishes it
    with Gallery.find(folder) as gallery:
        assert gallery.store.templates_of(KOFI) == []
        assert gallery.store.get_pending_probe(pending.identification_id) is None
        (erased,) = gallery.audit.events(kind="erase")
        assert erased.subject_ids == (KOFI,)
        assert erased.fields["reason"] == "an interrupted erasure"
    facetrust("retention", "sweep")  # nothing but ended consents left: a tombstone
    with Gallery.find(folder) as gallery:
        with pytest.raises(UnknownSubject):
            gallery.get_subject(KOFI)
        record = gallery.store.get_subject(KOFI)
        assert record is not None and record.erased_at and record.display_name is None
        assert {s.subject_id for s in gallery.list_subjects()} == set(identities) - {KOFI}
        assert gallery.audit.verify().ok


@pytest.mark.slow  # a real subprocess killed mid-erasure, then the installed command
def test_a_subject_whose_erasure_was_killed_is_not_enrolled_beside_shredded_templates(
    tmp_path: Path, identities: dict[str, list[Path]]
) -> None:
    folder = tmp_path / "gallery"
    gallery, _ = Gallery.init_folder(folder)
    with gallery:
        gallery.add_subject(KOFI, actor="registrar")
        gallery.grant_consent(
            KOFI, ["boarding"], expires_at=gallery.now() + timedelta(days=365),
            evidence_ref="form-1", evidence_sha256="ab" * 32, notice_version="v1",
            actor="registrar",
        )
        gallery.enroll(KOFI, identities[KOFI][:2], actor="registrar")
    kill_at(folder, "erase:key-destroyed", tmp_path)

    facetrust = installed_runner(folder)
    form = tmp_path / "form.txt"
    form.write_text("signed again")
    # a new consent given before anyone ran the sweep: enrolment must still be refused
    facetrust("consent", "grant", KOFI, "--purpose", "boarding", "--days", "30",
              "--evidence-ref", "form-2", "--evidence-file", str(form),
              "--notice-version", "v1")
    refused = facetrust("enroll", KOFI, str(identities[KOFI][2]), code=2)
    (line,) = refused.stderr.strip().splitlines()
    assert "erasure" in line and "facetrust retention sweep" in line, line
    with Gallery.find(folder) as gallery:
        assert len(gallery.store.templates_of(KOFI)) == 2  # only the shredded ones
        assert gallery.keystore.get_key(KOFI) is None  # no new key beside them
    facetrust("retention", "sweep")
    with Gallery.find(folder) as gallery:
        assert gallery.store.templates_of(KOFI) == []
        assert gallery.audit.verify().ok


#: Closes the event, stopping (to be killed) when it first erases an event-only subject.
CLOSER = r"""
import pathlib, sys, time
from facetrust.gallery import Gallery
from facetrust.gate import events

folder, flag, event_id = sys.argv[1:4]
gallery = Gallery.find(folder)
forget = gallery.forget

def stop_then_forget(*args, **kwargs):
    if not pathlib.Path(flag).exists():
        pathlib.Path(flag).write_text("forget")
        time.sleep(120)
    return forget(*args, **kwargs)

gallery.forget = stop_then_forget
events.close_event(gallery, event_id, actor="agent")
"""


@pytest.mark.slow  # a real subprocess killed mid-close, then the installed command
def test_closing_an_event_killed_half_way_is_finished_by_closing_it_again(
    tmp_path: Path, identities: dict[str, list[Path]]
) -> None:
    from facetrust.gate import events

    folder = tmp_path / "gallery"
    event_id = "flight-UA123"
    gallery, _ = Gallery.init_folder(folder)
    with gallery:
        now = gallery.now()
        events.open_event(gallery, event_id, purpose="boarding",
                          valid_from=now - timedelta(minutes=1),
                          valid_to=now + timedelta(hours=3), actor="agent")
        traveller = events.enroll_for_event(
            gallery, event_id, identities[KOFI][0], evidence_ref="passport-scan-1",
            evidence_sha256="cd" * 32, notice_version="gate-notice-3", actor="agent",
        )
    kill_when_paused(CLOSER, [str(folder), event_id], tmp_path / "paused")

    facetrust = installed_runner(folder)
    facetrust("event", "close", event_id)  # an operator closes it again: it finishes
    with Gallery.find(folder) as gallery:
        assert gallery.store.templates_of(traveller) == []
        with pytest.raises(UnknownSubject):
            gallery.get_subject(traveller)
        found = gallery.identify(identities[KOFI][3], purpose="boarding", actor="officer",
                                 case_ref="C-3")
        assert found.candidates == ()
        assert events.get_event(gallery, event_id).status == "closed"
        (closed,) = gallery.audit.events(kind="event.close")
        assert closed.subject_ids == (traveller,)
        assert gallery.audit.verify().ok
