"""Cases nobody can decide any more: when every candidate still awaiting review has
lost its eligibility (consent for the search's purpose withdrawn or expired, subject
erased, retention ended), the identification is closed: it leaves every queue, its
kept probe is shredded at once, the closure is audited with each candidate's reason,
and a reviewer who opens it is told why. A single ineligible candidate is shown as
"no longer eligible" while the others stay reviewable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from facetrust.errors import ReviewClosed
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.gallery.pending import probe_key_name

KOFI = "Kofi_Annan"
TWIN = "kofi-lookalike"


def two_candidate_gallery(
    gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any, boarding_days: float = 30,
) -> tuple[Gallery, str, dict[str, str]]:
    """Kofi Annan (photos kept) and a look-alike, each with a boarding consent and a
    separate access-control one (so ending boarding erases nobody); one identification
    for boarding with both as candidates. Returns the gallery, the identification id
    and each subject's boarding consent id."""
    boarding = {}
    for subject_id, faces in ((KOFI, identities[KOFI][:2]),
                              (TWIN, [embeddings[identities[KOFI][1]]])):
        gallery.add_subject(subject_id, actor="registrar")
        boarding[subject_id] = grant(gallery, subject_id, ("boarding",), days=boarding_days)
        grant(gallery, subject_id, ("access-control",), days=365)
        gallery.enroll(subject_id, faces, actor="registrar", keep_photos=subject_id == KOFI,
                       check_duplicates=False)
    found = gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
                             case_ref="C-CLOSE")
    assert {c.subject_id for c in found.candidates} == {KOFI, TWIN}
    assert gallery.store.get_pending_probe(found.identification_id) is not None
    return gallery, found.identification_id, boarding


def queued(gallery: Gallery, reviewer: str) -> list[str]:
    return [c.identification_id for c in gallery.review_queue(reviewer=reviewer).cases]


def assert_closed(gallery: Gallery, ident: str, reasons: dict[str, str], actor: str) -> None:
    """``ident`` is closed for good: out of the queue, probe shredded, closure audited."""
    assert gallery.store.get_pending_probe(ident) is None
    assert gallery.keystore.get_key(probe_key_name(ident)) is None
    closed = [e for e in gallery.audit.events(kind="identification.closed")
              if e.fields["identification_id"] == ident]
    assert len(closed) == 1, closed
    assert closed[0].actor == actor and closed[0].fields["ineligible"] == reasons
    assert closed[0].purpose == "boarding" and closed[0].fields["case_ref"] == "C-CLOSE"
    assert set(closed[0].subject_ids) == set(reasons)
    deleted = [e for e in gallery.audit.events(kind="pending-probe.deleted")
               if e.fields["identification_id"] == ident]
    assert [e.fields["reason"] for e in deleted] == [
        "identification closed: no candidate is eligible any more"
    ]
    assert ident not in queued(gallery, "alice")
    case = gallery.review_case(ident, reviewer="alice")
    assert case.status == "closed" and not case.may_review and case.probe_kept is False
    assert case.reason is not None
    assert "closed because none of its candidates is eligible any more" in case.reason
    assert [c.status for c in case.candidates] == ["ineligible"] * 2
    for candidate in case.candidates:
        assert candidate.summary == (
            f"No longer eligible ({reasons[candidate.subject_id]}): it cannot be confirmed."
        )
    for subject_id in (KOFI, TWIN):
        with pytest.raises(ReviewClosed, match="closed because none of its candidates"):
            gallery.review(ident, subject_id, reviewer="bob", decision="reject")
        with pytest.raises(ReviewClosed, match="closed because none of its candidates"):
            gallery.reference_photo(ident, subject_id, reviewer="bob")
    with pytest.raises(ReviewClosed, match="closed because none of its candidates"):
        gallery.probe_photo(ident, reviewer="bob")
    assert gallery.audit.verify().ok


def test_withdrawing_the_purpose_of_every_pending_candidate_closes_the_case(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    gallery, ident, boarding = two_candidate_gallery(
        make_gallery(), identities, embeddings, grant)
    result = gallery.withdraw_consent(KOFI, boarding[KOFI], actor="registrar", reason="asked")
    assert result.erasure is None  # access-control consent remains: nobody erased

    # one candidate ineligible, the other still reviewable
    case = gallery.review_case(ident, reviewer="alice")
    assert case.status == "pending" and case.may_review and case.probe_kept
    states = {c.subject_id: (c.status, c.summary) for c in case.candidates}
    assert states[KOFI] == (
        "ineligible", "No longer eligible (consent to boarding withdrawn): it cannot be confirmed."
    )
    assert states[TWIN] == ("pending", "0 of 2 confirmations; waiting for a first reviewer.")
    assert ident in queued(gallery, "alice")
    with pytest.raises(ReviewClosed, match=f"Candidate '{KOFI}' .* is no longer eligible"):
        gallery.review(ident, KOFI, reviewer="alice")
    with pytest.raises(ReviewClosed, match=f"Candidate '{KOFI}' .* is no longer eligible"):
        gallery.reference_photo(ident, KOFI, reviewer="alice")
    assert gallery.probe_photo(ident, reviewer="alice").photo is not None
    assert gallery.review(ident, TWIN, reviewer="alice").status == "pending"

    # the last pending candidate loses its eligibility: nobody can decide the case
    gallery.withdraw_consent(TWIN, boarding[TWIN], actor="registrar", reason="asked")
    assert_closed(gallery, ident, {KOFI: "consent to boarding withdrawn",
                                   TWIN: "consent to boarding withdrawn"}, actor="registrar")


def test_rejecting_the_last_eligible_candidate_closes_the_case(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    gallery, ident, _ = two_candidate_gallery(make_gallery(), identities, embeddings, grant)
    gallery.forget(KOFI, actor="dpo", reason="asked")
    status = gallery.review(ident, TWIN, reviewer="alice", decision="reject")
    assert status.status == "rejected"
    review = list(gallery.audit.events(kind="review"))[-1]
    assert review.fields["identification_status"] == "closed"
    assert gallery.store.identification_decided_at(ident) is not None
    case = gallery.review_case(ident, reviewer="bob")
    assert case.status == "closed"
    assert [(c.subject_id, c.status) for c in case.candidates] == [
        (c.subject_id, "ineligible" if c.subject_id == KOFI else "rejected")
        for c in case.candidates
    ]
    closed = list(gallery.audit.events(kind="identification.closed"))
    assert [(e.actor, e.fields["ineligible"]) for e in closed] == [
        ("alice", {KOFI: "the subject was erased"})
    ]
    assert ident not in queued(gallery, "bob")
    assert gallery.audit.verify().ok


def test_a_consent_that_expires_closes_the_case_when_anyone_looks(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any, clock: Any,
) -> None:
    """Expiry is no event: the first read of the queue (or of the case) closes it."""
    gallery, ident, _ = two_candidate_gallery(
        make_gallery(pending_probe_hours=720), identities, embeddings, grant, boarding_days=2)
    assert ident in queued(gallery, "alice")
    clock.advance(days=2, seconds=1)
    assert ident not in queued(gallery, "alice")
    assert_closed(gallery, ident, {KOFI: "consent to boarding expired",
                                   TWIN: "consent to boarding expired"}, actor="alice")


def test_the_retention_sweep_closes_cases_nobody_looks_at(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any, clock: Any,
) -> None:
    gallery, ident, _ = two_candidate_gallery(
        make_gallery(pending_probe_hours=720), identities, embeddings, grant, boarding_days=2)
    clock.advance(days=2, seconds=1)
    result = gallery.sweep_retention(actor="cron")
    assert result.erased == () and result.identifications_closed == 1
    assert gallery.store.get_pending_probe(ident) is None
    sweep = list(gallery.audit.events(kind="retention.sweep"))[-1]
    assert sweep.fields["identifications_closed"] == 1
    assert_closed(gallery, ident, {KOFI: "consent to boarding expired",
                                   TWIN: "consent to boarding expired"}, actor="cron")
    assert gallery.sweep_retention(actor="cron").identifications_closed == 0


def test_erasing_the_last_eligible_candidate_closes_the_case(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    gallery, ident, boarding = two_candidate_gallery(
        make_gallery(), identities, embeddings, grant)
    gallery.withdraw_consent(TWIN, boarding[TWIN], actor="registrar", reason="asked")
    assert gallery.store.identification_decided_at(ident) is None  # Kofi Annan may be decided
    result = gallery.forget(KOFI, actor="dpo", reason="Art. 17 request")
    assert result.probes_deleted == 1
    assert_closed(gallery, ident, {KOFI: "the subject was erased",
                                   TWIN: "consent to boarding withdrawn"}, actor="dpo")


def test_closing_reaches_cases_on_every_page_of_the_undecided_identifications(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding],
    grant: Any, clock: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Withdrawal and the sweep page through the undecided identifications: a case on
    a later page is found as one on the first (one case a page here)."""
    monkeypatch.setattr("facetrust.gallery.closing.PAGE", 1)
    gallery, first, boarding = two_candidate_gallery(
        make_gallery(pending_probe_hours=720), identities, embeddings, grant, boarding_days=2)
    later = [gallery.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
                              case_ref="C-CLOSE").identification_id for _ in range(2)]
    gallery.withdraw_consent(TWIN, boarding[TWIN], actor="registrar", reason="asked")
    gallery.withdraw_consent(KOFI, boarding[KOFI], actor="registrar", reason="asked")
    reasons = {KOFI: "consent to boarding withdrawn", TWIN: "consent to boarding withdrawn"}
    for ident in (first, *later):
        assert_closed(gallery, ident, reasons, actor="registrar")

    # the sweep's pages: three cases whose consents expire unseen
    gallery2, ident2, _ = two_candidate_gallery(
        make_gallery("g2", pending_probe_hours=720), identities, embeddings, grant, boarding_days=2)
    more = [gallery2.identify(identities[KOFI][2], purpose="boarding", actor="officer", k=2,
                              case_ref="C-CLOSE").identification_id for _ in range(2)]
    clock.advance(days=2, seconds=1)
    assert gallery2.sweep_retention(actor="cron").identifications_closed == 3
    expired = {KOFI: "consent to boarding expired", TWIN: "consent to boarding expired"}
    for ident in (ident2, *more):
        assert_closed(gallery2, ident, expired, actor="cron")
