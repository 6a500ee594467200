"""Finding subjects page by page, the audited subject overview, and confirmed erasure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facetrust.errors import InvalidParameter, UnknownSubject
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.store import PhotoRecord
from gallery_fixtures import consent


def test_find_subjects_pages_by_id_and_searches_ids_and_names(make_gallery: Any) -> None:
    gallery: Gallery = make_gallery()
    for number in range(7):
        name = "Amara Okafor" if number == 5 else None
        gallery.add_subject(f"s-{number}", display_name=name, actor="registrar")
    seen, after, pages = [], None, 0
    while True:
        page = gallery.find_subjects(after=after, limit=3)
        assert len(page.subjects) <= 3
        seen += [s.subject_id for s in page.subjects]
        pages += 1
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"s-{n}" for n in range(7)] and pages == 3
    found = gallery.find_subjects("okaFOR")
    assert [s.display_name for s in found.subjects] == ["Amara Okafor"]
    assert found.next_after is None
    assert [s.subject_id for s in gallery.find_subjects("s-3").subjects] == ["s-3"]
    gallery.forget("s-3", actor="dpo")
    assert gallery.find_subjects("s-3").subjects == ()
    with pytest.raises(InvalidParameter, match=r"'limit' parameter .* \[1, 500\]"):
        gallery.find_subjects(limit=0)


def test_viewing_a_subject_shows_counts_and_history_and_is_audited(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    gallery: Gallery = make_gallery()
    name = next(iter(identities))
    gallery.add_subject(name, display_name="K. A.", actor="registrar")
    first = consent(gallery, name, ("boarding",))
    consent(gallery, name, ("boarding", "access-control"), days=60)
    gallery.withdraw_consent(name, first, actor="registrar")
    gallery.enroll(name, [embeddings[p] for p in identities[name][:2]], actor="registrar")
    overview = gallery.view_subject(name, actor="dpo")
    assert overview.subject.template_count == 2 and overview.photos_kept == 0
    assert overview.subject.display_name == "K. A."
    assert [c.status for c in overview.consents] == ["withdrawn", "active"]
    assert overview.consents[1].purposes == ("boarding", "access-control")
    assert overview.subject.retention_until > overview.subject.last_interaction_at
    (event,) = [e for e in gallery.audit.events() if e.kind == "subject.view"]
    assert event.actor == "dpo" and event.subject_ids == (name,)
    assert event.seq == overview.audit_seq
    assert "K. A." not in str(event.to_dict())  # the log keeps the opaque id only

    with gallery.store.transaction():  # a kept photo, as enrol(keep_photos=True) stores it
        gallery.store.insert_photo(PhotoRecord("p1", name, b"sealed", gallery.now().isoformat()))
    assert gallery.view_subject(name, actor="dpo").photos_kept == 1
    with pytest.raises(UnknownSubject):
        gallery.view_subject("nobody", actor="dpo")


def test_erasure_with_a_typed_confirmation_needs_the_exact_id(make_gallery: Any) -> None:
    gallery: Gallery = make_gallery()
    gallery.add_subject("erase-me", actor="registrar")
    with pytest.raises(InvalidParameter, match="typed exactly to confirm. Got 'erase-m'"):
        gallery.forget("erase-me", actor="dpo", confirm_id="erase-m")
    assert gallery.get_subject("erase-me").subject_id == "erase-me"  # nothing erased
    result = gallery.forget("erase-me", actor="dpo", confirm_id=" erase-me ")
    assert result.subject_forgotten
    with pytest.raises(UnknownSubject):
        gallery.get_subject("erase-me")
