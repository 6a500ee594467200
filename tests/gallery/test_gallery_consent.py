"""Consent enforcement: no consent, withdrawn, expired, wrong purpose, other model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facetrust import crypto
from facetrust.errors import (
    ConsentExpired,
    ConsentRequired,
    ConsentWithdrawn,
    InvalidParameter,
    ModelMismatch,
    OperatingPointError,
    PurposeNotConsented,
    PurposeRequired,
    SubjectNotVerifiable,
    UnknownSubject,
)
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.store import TemplateRecord
from facetrust.times import parse_time

KOFI = "Kofi_Annan"


def probe_of(
    identities: dict[str, list[Path]], embeddings: dict[Path, Embedding], name: str
) -> Embedding:
    return embeddings[identities[name][3]]


def returned(gallery: Gallery, probe: Embedding, purpose: str = "boarding") -> list[str]:
    result = gallery.identify(probe, purpose=purpose, actor="officer", k=10, case_ref="CASE-1")
    return [c.subject_id for c in result.candidates]


def test_enrolment_without_consent_is_refused(
    make_gallery: Any, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    gallery = make_gallery()
    gallery.add_subject(KOFI, actor="registrar")
    with pytest.raises(ConsentRequired, match="no consent on record"):
        gallery.enroll(KOFI, [embeddings[identities[KOFI][0]]], actor="registrar")
    assert gallery.get_subject(KOFI).template_count == 0


def test_verify_without_consent_is_refused(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    sample_gallery.add_subject("newcomer", actor="registrar")
    with pytest.raises(SubjectNotVerifiable) as refused:
        sample_gallery.verify_subject(
            probe_of(identities, embeddings, KOFI), "newcomer", purpose="boarding", actor="officer",
                case_ref="CASE-1"
        )
    assert isinstance(refused.value.__cause__, ConsentRequired)


def test_search_without_purpose_is_refused(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = probe_of(identities, embeddings, KOFI)
    for purpose in (None, ""):
        with pytest.raises(PurposeRequired):
            sample_gallery.identify(probe, purpose=purpose, actor="officer", case_ref="CASE-1")
        with pytest.raises(PurposeRequired):
            sample_gallery.verify_subject(probe, KOFI, purpose=purpose, actor="officer",
                case_ref="CASE-1")
    with pytest.raises(InvalidParameter, match="not one this gallery accepts"):
        sample_gallery.identify(probe, purpose="marketing", actor="officer", case_ref="CASE-1")
    refusals = list(sample_gallery.audit.events(kind="identify.refused"))
    assert [e.fields["error"] for e in refusals] == [
        "PurposeRequired", "PurposeRequired", "InvalidParameter",
    ]
    assert refusals[-1].purpose == "marketing"  # a search for a purpose nobody consented to


def test_withdrawn_consent_is_refused_and_excluded(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = probe_of(identities, embeddings, KOFI)
    assert returned(sample_gallery, probe)[0] == KOFI
    result = sample_gallery.withdraw_consent(KOFI, actor="registrar")
    assert result.erasure is not None and result.erasure.key_destroyed
    assert KOFI not in returned(sample_gallery, probe)
    with pytest.raises(SubjectNotVerifiable) as refused:
        sample_gallery.verify_subject(probe, KOFI, purpose="boarding", actor="officer",
            case_ref="CASE-1")
    assert isinstance(refused.value.__cause__, ConsentWithdrawn)
    with pytest.raises(ConsentWithdrawn):
        sample_gallery.enroll(KOFI, [probe], actor="registrar")


def test_expired_consent_is_refused_and_excluded_before_any_sweep(
    make_gallery: Any,
    clock: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    gallery = make_gallery()
    gallery.add_subject(KOFI, actor="registrar")
    grant(gallery, KOFI, days=10)
    gallery.enroll(KOFI, [embeddings[identities[KOFI][0]]], actor="registrar")
    probe = probe_of(identities, embeddings, KOFI)
    assert returned(gallery, probe) == [KOFI]
    clock.advance(days=10, seconds=1)
    assert returned(gallery, probe) == []
    with pytest.raises(SubjectNotVerifiable) as refused:
        gallery.verify_subject(probe, KOFI, purpose="boarding", actor="officer", case_ref="CASE-1")
    assert isinstance(refused.value.__cause__, ConsentExpired)
    assert gallery.get_subject(KOFI).template_count == 1  # still stored until the sweep


def test_wrong_purpose_is_refused_and_excluded(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    probe = probe_of(identities, embeddings, KOFI)
    result = sample_gallery.identify(probe, purpose="access-control", actor="officer",
        case_ref="CASE-1")
    assert result.candidates == () and result.subjects_searched == 0
    with pytest.raises(SubjectNotVerifiable, match="consent covering 'access-control'") as told:
        sample_gallery.verify_subject(probe, KOFI, purpose="access-control", actor="officer",
            case_ref="CASE-1")
    assert "boarding" not in str(told.value)  # the operator is not told what else was consented
    assert isinstance(told.value.__cause__, PurposeNotConsented)
    (refused,) = sample_gallery.audit.events(kind="verify.refused")
    assert refused.actor == "officer" and refused.purpose == "access-control"
    assert refused.subject_ids == (KOFI,) and refused.fields["error"] == "PurposeNotConsented"


def test_other_model_is_refused_and_excluded(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    real = probe_of(identities, embeddings, KOFI)
    other = Embedding(np.asarray(real.vector), "another-model-v1")
    with pytest.raises(ModelMismatch, match="no template of model 'another-model-v1'"):
        sample_gallery.verify_subject(other, KOFI, purpose="boarding", actor="officer",
            case_ref="CASE-1")
    # no operating point is calibrated for an unknown model, so the search is refused too
    with pytest.raises(OperatingPointError, match="another-model-v1"):
        sample_gallery.identify(other, purpose="boarding", actor="officer", case_ref="CASE-1")


def test_templates_of_another_model_are_never_searched(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    # A template left by an older model, bit-identical to the probe: distance 0 if it
    # were (wrongly) compared across models.
    probe = probe_of(identities, embeddings, KOFI)
    gallery = sample_gallery
    gallery.add_subject("legacy", actor="registrar")
    grant(gallery, "legacy")
    keyring = gallery.parts.keyring
    data_key = keyring.data_key("legacy", create=True)
    assert data_key is not None
    vector = crypto.protect(probe.vector, keyring.template_secret())
    draft = TemplateRecord("legacy-t1", "legacy", "old-model-v0", b"", gallery.now().isoformat())
    sealed = keyring.seal_template(draft, vector, data_key)
    with gallery.store.transaction():
        gallery.store.insert_template(
            TemplateRecord("legacy-t1", "legacy", "old-model-v0", sealed, draft.created_at)
        )
        gallery.store.bump_generation()
    assert returned(gallery, probe)[0] == KOFI
    assert "legacy" not in returned(gallery, probe)
    with pytest.raises(ModelMismatch, match="has: old-model-v0"):
        gallery.verify_subject(probe, "legacy", purpose="boarding", actor="officer",
            case_ref="CASE-1")


def test_consent_for_one_purpose_does_not_open_another(
    make_gallery: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Any,
    grant: Any,
) -> None:
    gallery = make_gallery()
    enrol_all(gallery, identities, embeddings, purposes=("photo-library",))
    grant(gallery, "Hu_Jintao", ("boarding",))
    searched = gallery.identify(
        probe_of(identities, embeddings, KOFI), purpose="boarding", actor="officer",
            case_ref="CASE-1"
    )
    assert searched.subjects_searched == 1 and searched.candidates == ()


def test_unknown_subject_and_consent_validation(sample_gallery: Gallery, grant: Any) -> None:
    with pytest.raises(UnknownSubject):
        sample_gallery.get_subject("nobody")
    with pytest.raises(InvalidParameter, match="evidence_sha256"):
        sample_gallery.grant_consent(
            KOFI,
            ["boarding"],
            expires_at=sample_gallery.now().replace(year=2030),
            evidence_ref="form",
            evidence_sha256="not-a-hash",
            notice_version="v1",
            actor="registrar",
        )
    history = sample_gallery.consents(KOFI)
    assert [c.status for c in history] == ["active"]
    assert history[0].evidence_ref == f"form-{KOFI}"


class StoppedClock:
    """A clock that stays where the test puts it, backwards included."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def __call__(self) -> datetime:
        return self.current


def test_at_the_instant_of_expiry_consent_has_ended_everywhere_and_a_clock_set_back_reopens(
    tmp_path: Path,
    master_key: crypto.MasterKey,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    clock = StoppedClock(datetime(2026, 1, 15, 9, tzinfo=UTC))
    config = GalleryConfig.in_folder(tmp_path, key_file=None)
    with Gallery.create(config, master_key, now=clock) as gallery:
        end = parse_time("2026-01-16T10:00+01:00", "expires")  # 09:00 UTC
        gallery.add_subject(KOFI, actor="registrar")
        gallery.grant_consent(KOFI, ["boarding"], expires_at=end, evidence_ref="form",
                              evidence_sha256="ab" * 32, notice_version="v1", actor="registrar")
        gallery.enroll(KOFI, [embeddings[identities[KOFI][0]]], actor="registrar")
        probe = probe_of(identities, embeddings, KOFI)

        def state() -> tuple[list[str], bool, str]:
            try:
                verified = gallery.verify_subject(
                    probe, KOFI, purpose="boarding", actor="officer", case_ref="CASE-1"
                ).match
            except SubjectNotVerifiable:
                verified = False
            return returned(gallery, probe), verified, gallery.consents(KOFI)[0].status

        clock.current = end - timedelta(microseconds=1)
        assert state() == ([KOFI], True, "active")
        clock.current = end  # expires_at is the first instant without consent
        assert state() == ([], False, "expired")
        clock.current = end - timedelta(microseconds=1)  # the clock is set back
        assert state() == ([KOFI], True, "active")  # no cached answer outlives the clock


def test_an_expiry_that_is_not_a_datetime_is_refused_by_name(sample_gallery: Gallery) -> None:
    # text handed straight to grant_consent crashed with AttributeError ('str' ... tzinfo)
    with pytest.raises(InvalidParameter, match="'expires_at' of a consent must be a datetime"):
        sample_gallery.grant_consent(
            KOFI, ["boarding"], expires_at="2030-01-01",  # type: ignore[arg-type]
            evidence_ref="form", evidence_sha256="ab" * 32, notice_version="v1",
            actor="registrar",
        )
    assert len(sample_gallery.consents(KOFI)) == 1


def test_an_injected_clock_is_read_in_utc_and_a_naive_one_is_refused_before_any_write(
    tmp_path: Path, master_key: crypto.MasterKey
) -> None:
    # a clock in India's zone stored "+05:30" times beside UTC ones (the store compares
    # some times as text); datetime.now (naive) stored zoneless times, then
    # grant_consent crashed with TypeError (naive compared with the aware expiry)
    india = timezone(timedelta(hours=5, minutes=30))
    local = StoppedClock(datetime(2026, 1, 15, 14, 30, tzinfo=india))
    config = GalleryConfig.in_folder(tmp_path / "local", key_file=None)
    (tmp_path / "local").mkdir()
    with Gallery.create(config, master_key, now=local) as gallery:
        subject = gallery.add_subject(KOFI, actor="registrar")
        granted = gallery.grant_consent(
            KOFI, ["boarding"], expires_at=datetime(2027, 1, 1, tzinfo=india),
            evidence_ref="form", evidence_sha256="ab" * 32, notice_version="v1",
            actor="registrar",
        )
        stamps = [subject.created_at, subject.retention_until, granted.granted_at,
                  granted.expires_at, *(e.recorded_at for e in gallery.audit.events())]
    assert all(s.endswith("+00:00") for s in stamps), stamps
    assert subject.created_at == "2026-01-15T09:00:00+00:00"

    naive = StoppedClock(datetime(2026, 1, 15, 9))
    config = GalleryConfig.in_folder(tmp_path / "naive", key_file=None)
    (tmp_path / "naive").mkdir()
    with pytest.raises(InvalidParameter, match="clock .now=. must return timezone-aware"):
        Gallery.create(config, master_key, now=naive)
    with Gallery.create(config, master_key) as gallery:  # nothing was kept
        head = gallery.audit.head()
    with Gallery.open(config, master_key=master_key, now=naive) as gallery:
        with pytest.raises(InvalidParameter, match="2026-01-15T09:00:00, which has no time zone"):
            gallery.add_subject(KOFI, actor="registrar")
        assert gallery.list_subjects() == []
    with Gallery.open(config, master_key=master_key) as gallery:
        assert gallery.audit.head() == head
