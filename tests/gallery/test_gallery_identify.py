"""Enrolment and identification on real photos, with human review of candidates."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from facetrust import FacePipeline, Settings, crypto
from facetrust.errors import (
    DuplicateEnrolment,
    FaceQualityTooLow,
    InvalidParameter,
    ReviewClosed,
    ReviewNotAllowed,
    UnknownIdentification,
)
from facetrust.faces import Embedding
from facetrust.gallery import Gallery


def test_identification_returns_the_right_subject_at_rank_1(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    for name, paths in identities.items():
        for probe_path in paths[2:]:  # photos never enrolled
            result = sample_gallery.identify(
                embeddings[probe_path], purpose="boarding", actor="officer", case_ref="case-1"
            )
            assert result.candidates, f"{probe_path.name}: no candidate"
            assert result.candidates[0].subject_id == name, probe_path.name
            assert result.candidates[0].rank == 1
            assert all(c.distance <= result.threshold for c in result.candidates)
            distances = [c.distance for c in result.candidates]
            assert distances == sorted(distances)
            assert result.requires_human_review
            assert result.subjects_searched == len(identities)


def test_identification_from_an_image_file_end_to_end(
    sample_gallery: Gallery, identities: dict[str, list[Path]]
) -> None:
    probe = identities["Colin_Powell"][3]
    result = sample_gallery.identify(probe, purpose="boarding", actor="officer", k=1,
        case_ref="CASE-1")
    assert [c.subject_id for c in result.candidates] == ["Colin_Powell"]
    import hashlib

    assert result.probe_sha256 == hashlib.sha256(probe.read_bytes()).hexdigest()


@pytest.mark.parametrize("case_ref", [None, "", "   "])
def test_a_search_or_verification_without_a_case_is_refused_before_the_photo_is_read(
    sample_gallery: Gallery, identities: dict[str, list[Path]], case_ref: str | None
) -> None:
    """The REST service and the console require a case reference: so does the library,
    for every entry point. Not a photo at all: the case is checked before any decoding."""
    from facetrust.gallery.photos import verify_photos

    probe = b"not a photo"
    subject = sorted(identities)[0]
    head = sample_gallery.audit.head().seq
    calls = {
        "identify": lambda: sample_gallery.identify(
            probe, purpose="boarding", actor="officer", case_ref=case_ref),
        "verify": lambda: sample_gallery.verify_subject(
            probe, subject, purpose="boarding", actor="officer", case_ref=case_ref),
        "verify.photos": lambda: verify_photos(
            sample_gallery, probe, probe, purpose="boarding", actor="officer", case_ref=case_ref),
    }
    for call in calls.values():
        with pytest.raises(InvalidParameter, match="must name the case it belongs to"):
            call()
    refused = [e for e in sample_gallery.audit.events() if e.seq > head]
    assert [e.kind for e in refused] == [f"{kind}.refused" for kind in calls]
    assert all(e.fields["error"] == "InvalidParameter" for e in refused)
    assert sample_gallery.audit.verify().ok


def test_candidate_is_confirmed_only_by_the_quorum_of_named_reviewers(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = embeddings[identities["Hu_Jintao"][3]]
    result = sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="C-9")
    top = result.candidates[0].subject_id
    first = sample_gallery.review(result.identification_id, top, reviewer="alice")
    assert first.status == "pending" and first.required == 2
    with pytest.raises(ReviewClosed, match="alice has already reviewed"):
        sample_gallery.review(result.identification_id, top, reviewer="alice")
    second = sample_gallery.review(result.identification_id, top, reviewer="bob")
    assert second.status == "confirmed" and set(second.confirmed_by) == {"alice", "bob"}
    events = list(sample_gallery.audit.events(kind="review"))
    assert [e.fields["status"] for e in events] == ["pending", "confirmed"]
    assert events[-1].fields["verified_by"] == ["alice", "bob"]
    assert events[-1].fields["case_ref"] == "C-9"
    with pytest.raises(InvalidParameter, match="not a candidate"):
        sample_gallery.review(result.identification_id, "Serena_Williams", reviewer="carol")
    if len(result.candidates) > 1:  # the identification is decided: the others are closed
        other = result.candidates[1].subject_id
        with pytest.raises(ReviewClosed, match="already confirmed"):
            sample_gallery.review(
                result.identification_id, other, reviewer="carol", decision="reject"
            )


def test_identification_is_audited_with_the_art_12_fields(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = embeddings[identities["Kofi_Annan"][2]]
    result = sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="C-1")
    (event,) = sample_gallery.audit.events(kind="identify")
    assert event.seq == result.audit_seq
    assert event.actor == "officer" and event.purpose == "boarding"
    assert event.fields["case_ref"] == "C-1"
    assert event.fields["probe_sha256"] == result.probe_sha256
    assert event.fields["candidate_count"] == len(result.candidates)
    assert list(event.subject_ids) == [c.subject_id for c in result.candidates]
    assert set(event.fields["period_of_use"]) == {"started_at", "ended_at"}
    assert event.fields["reference_gallery"]["gallery_id"] == sample_gallery.gallery_id
    assert event.fields["reference_gallery"]["subjects_searched"] == 10
    assert event.fields["operating_point"] == result.operating_point


def test_the_probe_is_never_stored(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = embeddings[identities["Vicente_Fox"][3]]
    sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    sample_gallery.store.reclaim()
    protected = crypto.protect(probe.vector, sample_gallery.parts.keyring.template_secret())
    stored = sample_gallery.config.db_path.read_bytes()
    wal = Path(str(sample_gallery.config.db_path) + "-wal")
    stored += wal.read_bytes() if wal.exists() else b""
    assert probe.vector.tobytes() not in stored
    assert protected.tobytes() not in stored
    # partial vectors too: no 32-byte run of the probe appears anywhere
    assert probe.vector.tobytes()[:32] not in stored


def test_enrolment_refuses_faces_that_fail_quality(
    make_gallery: Any, identities: dict[str, list[Path]], grant: Any, clock: Any, master_key: Any
) -> None:
    gallery = make_gallery()
    gallery.add_subject("kofi", actor="registrar")
    grant(gallery, "kofi")
    config = gallery.config
    gallery.close()
    strict = FacePipeline(Settings(min_inter_eye_px=500))  # the sample faces are ~40 px
    with Gallery.open(config, master_key=master_key, pipeline=strict, now=clock) as reopened:
        with pytest.raises(FaceQualityTooLow, match="face too small"):
            reopened.enroll("kofi", [identities["Kofi_Annan"][0]], actor="registrar")
        assert reopened.get_subject("kofi").template_count == 0


def test_duplicate_enrolment_warns_or_is_refused_by_policy(
    make_gallery: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    kofi = identities["Kofi_Annan"]
    for policy in ("warn", "refuse"):
        gallery = make_gallery(policy, duplicate_policy=policy)
        for subject in ("kofi", "alias"):
            gallery.add_subject(subject, actor="registrar")
            grant(gallery, subject)
        gallery.enroll("kofi", [embeddings[kofi[0]]], actor="registrar")
        if policy == "warn":
            result = gallery.enroll("alias", [embeddings[kofi[1]]], actor="registrar")
            assert [d.subject_id for d in result.duplicates] == ["kofi"]
        else:
            with pytest.raises(DuplicateEnrolment, match="'kofi'"):
                gallery.enroll("alias", [embeddings[kofi[1]]], actor="registrar")
            assert gallery.get_subject("alias").template_count == 0
            assert [e.kind for e in gallery.audit.events(subject="alias")][-1] == "enrol.refused"


def test_photos_are_stored_only_on_opt_in_and_encrypted(
    make_gallery: Any, identities: dict[str, list[Path]], grant: Any
) -> None:
    gallery = make_gallery()
    photo = identities["Serena_Williams"][0]
    for subject, keep in (("without", False), ("with", True)):
        gallery.add_subject(subject, actor="registrar")
        grant(gallery, subject)
        result = gallery.enroll(subject, [photo], actor="registrar", keep_photos=keep)
        assert result.photos_stored == int(keep)
    assert gallery.store.photos_of("without") == []
    (stored,) = gallery.store.photos_of("with")
    assert photo.read_bytes()[:64] not in stored.ciphertext
    db = sqlite3.connect(gallery.config.db_path)
    assert db.execute("SELECT COUNT(*) FROM photos").fetchone()[0] == 1
    db.close()


def test_batch_enrolment_is_all_or_nothing(
    make_gallery: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    gallery = make_gallery()
    names = list(identities)
    with pytest.raises(RuntimeError), gallery.batch():
        for name in names[:3]:
            gallery.add_subject(name, actor="importer")
            grant(gallery, name)
            gallery.enroll(
                name, [embeddings[identities[name][0]]], actor="importer", check_duplicates=False
            )
        raise RuntimeError("import aborted")
    assert gallery.list_subjects() == [] and gallery.keystore.all_keys() == {}
    assert gallery.audit.verify().events_checked == 1
    with gallery.batch():
        for name in names:
            gallery.add_subject(name, actor="importer")
            grant(gallery, name)
            gallery.enroll(
                name, [embeddings[identities[name][0]]], actor="importer", check_duplicates=False
            )
    found = gallery.identify(
        embeddings[identities[names[4]][3]], purpose="boarding", actor="officer", case_ref="CASE-1"
    )
    assert found.candidates[0].subject_id == names[4]
    assert gallery.audit.verify().ok


def test_a_candidate_whose_consent_ended_cannot_be_confirmed(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = embeddings[identities["Jennifer_Lopez"][2]]
    result = sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    top = result.candidates[0].subject_id
    sample_gallery.review(result.identification_id, top, reviewer="alice")
    sample_gallery.withdraw_consent(top, actor="registrar")
    # no longer eligible: the candidate, or (when it was the last one) the whole case
    with pytest.raises(ReviewClosed, match="(is no longer eligible|closed because none)"):
        sample_gallery.review(result.identification_id, top, reviewer="bob")


def test_review_decisions_are_final_and_explicit(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    """pending -> confirmed (quorum of distinct reviewers) or rejected (one reject);
    nothing leaves confirmed or rejected."""
    probe = embeddings[identities["Hu_Jintao"][3]]
    result = sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="C-3")
    top = result.candidates[0].subject_id
    sample_gallery.review(result.identification_id, top, reviewer="alice")
    assert sample_gallery.review(result.identification_id, top, reviewer="bob").status == (
        "confirmed"
    )
    for decision in ("reject", "confirm"):
        with pytest.raises(ReviewClosed, match="already confirmed"):
            sample_gallery.review(
                result.identification_id, top, reviewer="carol", decision=decision
            )
    again = sample_gallery.identify(probe, purpose="boarding", actor="officer", case_ref="C-4")
    rejected = sample_gallery.review(
        again.identification_id, top, reviewer="alice", decision="reject"
    )
    assert rejected.status == "rejected" and rejected.rejected_by == ("alice",)
    for decision in ("confirm", "reject"):
        with pytest.raises(ReviewClosed, match="already rejected"):
            sample_gallery.review(again.identification_id, top, reviewer="bob", decision=decision)
    statuses = [e.fields["status"] for e in sample_gallery.audit.events(kind="review")]
    assert statuses == ["pending", "confirmed", "rejected"]  # refused reviews change nothing


def test_an_unknown_identification_is_unknown_not_invalid(sample_gallery: Gallery) -> None:
    with pytest.raises(UnknownIdentification, match="No identification 'nope'"):
        sample_gallery.review("nope", "Kofi_Annan", reviewer="alice")


@pytest.mark.parametrize("searcher_may_review", [False, True])
def test_the_searcher_reviews_only_where_policy_allows(
    make_gallery: Any,
    enrol_all: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    searcher_may_review: bool,
) -> None:
    gallery = make_gallery(searcher_may_review=searcher_may_review)
    enrol_all(gallery, identities, embeddings)
    probe = embeddings[identities["Kofi_Annan"][3]]
    result = gallery.identify(probe, purpose="boarding", actor="key:officer1", case_ref="C-5")
    top = result.candidates[0].subject_id
    if searcher_may_review:
        status = gallery.review(result.identification_id, top, reviewer="key:officer1")
        assert status.confirmed_by == ("key:officer1",)
    else:
        with pytest.raises(ReviewNotAllowed, match="ran this identification"):
            gallery.review(result.identification_id, top, reviewer="key:officer1")
        assert list(gallery.audit.events(kind="review")) == []
        gallery.review(result.identification_id, top, reviewer="key:other1")
    last = gallery.review(result.identification_id, top, reviewer="key:other2")
    assert last.status == "confirmed"
    assert ("key:officer1" in last.confirmed_by) == searcher_may_review
