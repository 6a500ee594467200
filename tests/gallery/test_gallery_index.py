"""The in-memory index returns exactly what a brute-force search over eligible subjects does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from facetrust.faces import Embedding
from facetrust.gallery.index import TemplateIndex
from facetrust.matching import face_distance
from facetrust.store import ConsentRecord, EligibilityColumns

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def consent(
    subject: str, purposes: tuple[str, ...], days: int, withdrawn: bool = False
) -> ConsentRecord:
    return ConsentRecord(
        f"c-{subject}-{purposes}",
        subject,
        purposes,
        (NOW - timedelta(days=10)).isoformat(),
        (NOW + timedelta(days=days)).isoformat(),
        "form",
        "ab" * 32,
        "v1",
        withdrawn_at=NOW.isoformat() if withdrawn else None,
    )


@pytest.mark.parametrize("per_subject", [1, 2])
def test_search_matches_brute_force(
    identities: dict[str, list[Path]], embeddings: dict[Path, Embedding], per_subject: int
) -> None:
    names = list(identities)
    templates = [
        (name, embeddings[path].vector) for name in names for path in identities[name][:per_subject]
    ]
    consents = [consent(n, ("boarding",), 30) for n in names[:6]]
    consents += [consent(names[6], ("boarding",), -1)]  # expired
    consents += [consent(names[7], ("boarding",), 30, withdrawn=True)]
    consents += [consent(names[8], ("access-control",), 30)]  # other purpose
    retention = {n: NOW + timedelta(days=100) for n in names}
    retention[names[5]] = NOW - timedelta(days=1)  # past retention
    index = TemplateIndex.build(
        1, "m", templates, retention, consents, ("boarding", "access-control")
    )
    eligible = set(names[:5])
    for name in names:
        probe = embeddings[identities[name][3]].vector
        hits, searched = index.search(probe, purpose="boarding", now=NOW, k=3, threshold=0.6)
        assert searched == len(eligible)
        expected = sorted(
            (
                float(
                    np.min(
                        face_distance(np.stack([v for n, v in templates if n == subject]), probe)
                    )
                ),
                subject,
            )
            for subject in eligible
        )
        expected = [(d, s) for d, s in expected if d <= 0.6][:3]
        assert [h.subject_id for h in hits] == [s for _, s in expected]
        assert [h.distance for h in hits] == pytest.approx([d for d, _ in expected], abs=1e-9)


@pytest.mark.parametrize("kind", ["exact", "quantized"])
def test_eligibility_is_reused_until_the_next_deadline_and_no_longer(
    identities: dict[str, list[Path]], embeddings: dict[Path, Embedding], kind: str
) -> None:
    names = list(identities)
    templates = [(name, embeddings[identities[name][0]].vector) for name in names]
    consents = [consent(n, ("boarding",), 30) for n in names[1:]]
    consents += [consent(names[0], ("boarding",), 2)]  # expires first
    retention = {n: NOW + timedelta(days=100) for n in names}
    retention[names[1]] = NOW + timedelta(days=5)  # then this one's retention ends
    index = TemplateIndex.build(
        1, "m", templates, retention, consents, ("boarding",), kind=kind, exact_below=4
    )
    assert index.templates.index_kind == kind
    window = index.eligibility("boarding", NOW)
    assert window.until == (NOW + timedelta(days=2)).timestamp()
    assert index.eligibility("boarding", NOW + timedelta(days=1)) is window  # reused
    probe = embeddings[identities[names[0]][1]].vector
    for day, gone in ((1, set()), (2, {names[0]}), (6, {names[0], names[1]})):
        now = NOW + timedelta(days=day)
        hits, searched = index.search(probe, purpose="boarding", now=now, k=10, threshold=10.0)
        assert searched == len(names) - len(gone)
        assert {h.subject_id for h in hits} == set(names) - gone
    with pytest.raises(ValueError, match="read-only"):
        index.eligibility("boarding", NOW).rows_ok[0] = False


def test_eligibility_from_store_columns_equals_eligibility_from_records() -> None:
    rng = np.random.default_rng(0)
    names = [f"s{n}" for n in range(6)]
    templates = [(name, rng.standard_normal(8).astype(np.float32)) for name in names]
    last_seen = {n: NOW - timedelta(days=d, microseconds=d) for d, n in enumerate(names)}
    del last_seen["s5"]  # erased: not listed
    consents = [
        consent("s0", ("boarding",), 30),
        consent("s0", ("boarding", "access-control"), 60),  # the later expiry wins
        consent("s1", ("boarding",), -1),  # expired
        consent("s3", ("access-control",), 10),
        consent("s4", ("boarding",), 20),
        consent("ghost", ("boarding",), 20),  # no templates
        consent("s0", ("other",), 90),  # a purpose not configured
    ]
    purposes = ("boarding", "access-control")
    days = 30
    by_records = TemplateIndex.build(
        1, "m", templates, {n: t + timedelta(days=days) for n, t in last_seen.items()},
        consents, purposes,
    )
    active = [c for c in consents if c.withdrawn_at is None]
    columns = EligibilityColumns(
        list(last_seen), [t.isoformat() for t in last_seen.values()],
        [c.subject_id for c in active], [c.purposes for c in active],
        [c.expires_at for c in active],
    )
    by_columns = TemplateIndex.from_columns(1, by_records.templates, columns, days, purposes)
    np.testing.assert_array_equal(by_columns.retention_until, by_records.retention_until)
    assert by_columns.valid_until.keys() == by_records.valid_until.keys()
    for purpose, until in by_records.valid_until.items():
        np.testing.assert_array_equal(by_columns.valid_until[purpose], until)
