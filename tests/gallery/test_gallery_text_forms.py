"""What a person types (names, case references, purposes, searches) means the same
thing in every Unicode form: "Jos\u00e9" typed composed (NFC, as most keyboards
write it) or decomposed (NFD, as macOS file names and some keyboards write it) is
one name, one case reference, one purpose, and a search finds it either way."""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from pathlib import Path

import pytest

from facetrust.errors import InvalidParameter, ReviewClosed, ReviewNotAllowed
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.gallery.checks import TEXT_LIMITS
from gallery_fixtures import EVIDENCE_SHA256, GalleryFactory

COMPOSED = "Jos\u00e9"
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


def test_one_reviewer_typed_in_two_forms_counts_once_toward_the_quorum(
    sample_gallery: Gallery, identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    probe = embeddings[identities["Hu_Jintao"][3]]
    found = sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="C-1")
    top = found.candidates[0].subject_id
    first = sample_gallery.review(found.identification_id, top, reviewer=COMPOSED)
    assert first.status == "pending" and first.required == 2
    for same in (DECOMPOSED, "JOS\u00c9", "\uff2a\uff4f\uff53\u00e9"):  # case, full width
        with pytest.raises(ReviewClosed, match="has already reviewed"):
            sample_gallery.review(found.identification_id, top, reviewer=same)
    case = sample_gallery.review_case(found.identification_id, reviewer=DECOMPOSED)
    assert case.candidates[0].status == "pending"
    assert [r.reviewer for r in sample_gallery.store.reviews_of(found.identification_id)] == [
        COMPOSED
    ]


def test_the_searcher_may_not_review_under_another_spelling_of_their_name(
    sample_gallery: Gallery, identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    probe = embeddings[identities["Hu_Jintao"][3]]
    found = sample_gallery.identify(probe, purpose="boarding", actor=DECOMPOSED,
                                    case_ref="C-2")
    top = found.candidates[0].subject_id
    for same in (COMPOSED, "jos\u00e9"):
        with pytest.raises(ReviewNotAllowed, match="ran this identification"):
            sample_gallery.review(found.identification_id, top, reviewer=same)
        assert sample_gallery.review_case(found.identification_id, reviewer=same).may_review \
            is False
    assert sample_gallery.review_queue(reviewer=COMPOSED).cases == ()


def test_typed_text_is_recorded_in_nfc_and_measured_there(
    sample_gallery: Gallery, identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    probe = embeddings[identities["Hu_Jintao"][3]]
    # 200 letters: 400 code points decomposed, within the limit once composed
    case_ref = unicodedata.normalize("NFD", "\u00e9" * TEXT_LIMITS["case_ref"])
    found = sample_gallery.identify(probe, purpose="boarding", actor=DECOMPOSED,
                                    case_ref=f" {case_ref} ")
    event = next(sample_gallery.audit.events(kind="identify"))
    assert event.actor == COMPOSED
    assert event.fields["case_ref"] == "\u00e9" * TEXT_LIMITS["case_ref"]
    assert found.case_ref == event.fields["case_ref"]
    top = found.candidates[0].subject_id
    sample_gallery.review(found.identification_id, top, reviewer="ana",
                          note=f"same as {DECOMPOSED}")
    (review,) = sample_gallery.audit.events(kind="review")
    assert review.fields["note"] == f"same as {COMPOSED}"
    with pytest.raises(InvalidParameter, match="'case_ref' is at most 200 characters"):
        sample_gallery.identify(probe, purpose="boarding", actor="officer",
                                case_ref="\u00e9" * (TEXT_LIMITS["case_ref"] + 1))


def test_a_purpose_typed_in_another_form_names_the_gallerys_purpose(
    make_gallery: GalleryFactory,
) -> None:
    gallery = make_gallery(purposes=("caf\u00e9-access", "boarding"))
    gallery.add_subject("kofi", actor="desk")
    consent = gallery.grant_consent(
        "kofi", [unicodedata.normalize("NFD", "caf\u00e9-access")],
        expires_at=gallery.now() + timedelta(days=30), evidence_ref="form-1",
        evidence_sha256=EVIDENCE_SHA256, notice_version="n1", actor="desk",
    )
    assert consent.purposes == ("caf\u00e9-access",)
    assert gallery.check_purpose(unicodedata.normalize("NFD", "caf\u00e9-access")) == (
        "caf\u00e9-access"
    )
    for other in ("Boarding", " boarding", "boarding\u200b"):
        with pytest.raises(InvalidParameter, match="not one this gallery accepts"):
            gallery.check_purpose(other)


@pytest.mark.parametrize(("purposes", "message"), [
    (("boarding", "Boarding"), "differ only in case or Unicode form"),
    (("caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")), "differ only in case"),
    ((" boarding",), "has spaces around it"),
    (("board\u202eing",), r"U\+202E"),
    (("board\ning",), r"U\+000A"),
    (("b" * 101,), "over 100 characters"),
])
def test_a_gallery_cannot_configure_purposes_a_caller_cannot_tell_apart(
    tmp_path: Path, purposes: tuple[str, ...], message: str,
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        GalleryConfig.in_folder(tmp_path, purposes=purposes)


def test_a_subject_search_finds_a_name_however_it_is_typed(
    make_gallery: GalleryFactory,
) -> None:
    gallery = make_gallery()
    gallery.add_subject("s1", display_name="\u00c9lodie Dupr\u00e9", actor="desk")
    gallery.add_subject("s2", display_name=f"{COMPOSED} N\u00fa\u00f1ez", actor="desk")
    for query in ("\u00c9lodie", "\u00e9lodie", "\u00c9LODIE", "DUPR\u00c9",
                  unicodedata.normalize("NFD", "\u00c9lodie")):
        assert [s.subject_id for s in gallery.find_subjects(query).subjects] == ["s1"], query
    for query in (DECOMPOSED, COMPOSED, "jos\u00e9"):
        assert [s.subject_id for s in gallery.find_subjects(query).subjects] == ["s2"], query


def test_audit_filters_find_what_was_recorded_however_it_is_typed(
    make_gallery: GalleryFactory,
) -> None:
    gallery = make_gallery(purposes=("caf\u00e9-access",))
    gallery.add_subject("s1", actor=COMPOSED)
    for actor in (COMPOSED, DECOMPOSED, f" {COMPOSED} "):
        assert [e.kind for e in gallery.audit.events(actor=actor, kind="subject.add")] == [
            "subject.add"
        ], actor
