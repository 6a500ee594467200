"""A gallery at the fair operating point decides as compare() does on unrotated templates."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facetrust.faces import Embedding
from facetrust.matching import compare, get_operating_point

FAIR = "fmr-1e-3-fair"


def test_fair_point_normalizes_distances() -> None:
    point = get_operating_point(FAIR)
    assert point.normalizer is not None and point.score_normalizer() is not None


def test_identify_and_verify_at_the_fair_point_match_compare(
    make_gallery: Any,
    enrol_all: Callable[..., None],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    gallery = make_gallery(operating_point=FAIR)
    enrol_all(gallery, identities, embeddings)
    raw_differs = found_self = 0
    for name, paths in identities.items():
        probe = embeddings[paths[2]]  # never enrolled
        result = gallery.identify(probe, purpose="boarding", actor="officer", k=len(identities),
            case_ref="CASE-1")
        assert result.operating_point == FAIR
        expected, nearest = {}, {}
        for other, other_paths in identities.items():
            verdicts = [compare(probe, embeddings[p], FAIR) for p in other_paths[:2]]
            best = nearest[other] = min(v.distance for v in verdicts)
            if any(v.match for v in verdicts):
                expected[other] = best
            raw = min(
                float(np.linalg.norm(probe.vector - embeddings[p].vector))
                for p in other_paths[:2]
            )
            raw_differs += abs(raw - best) > 1e-4
        found = {c.subject_id: c.distance for c in result.candidates}
        assert found.keys() == expected.keys(), name
        for subject, distance in found.items():
            assert abs(distance - expected[subject]) < 1e-4
        found_self += bool(result.candidates) and result.candidates[0].subject_id == name
        verification = gallery.verify_subject(probe, name, purpose="boarding", actor="officer",
            case_ref="CASE-1")
        assert verification.match == (name in expected)
        assert abs(verification.distance - nearest[name]) < 1e-4
    assert raw_differs  # the normalizer really moved some distances
    assert found_self >= len(identities) - 2  # an FMR-1e-3 point still finds most people


def test_the_duplicate_check_at_the_fair_point_decides_as_compare(
    make_gallery: Any,
    grant: Callable[..., str],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    """The duplicate check searches at the operating point's normalized distances
    (it once compared raw distances with the fair point's normalized threshold)."""
    gallery = make_gallery(operating_point=FAIR, duplicate_policy="warn")
    enrolled: dict[str, Embedding] = {}
    raw_differs = duplicates_seen = 0
    for round_, photo in enumerate((0, 1)):
        for name, paths in identities.items():
            subject = f"{name}-{round_}"
            face = embeddings[paths[photo]]
            gallery.add_subject(subject, actor="registrar")
            grant(gallery, subject)
            result = gallery.enroll(subject, [face], actor="registrar")
            expected = {}
            for other, template in enrolled.items():
                verdict = compare(face, template, FAIR)
                raw = float(np.linalg.norm(face.vector - template.vector))
                raw_differs += (raw <= verdict.threshold) != verdict.match
                if verdict.match:
                    expected[other] = verdict.distance
            found = {d.subject_id: d.distance for d in result.duplicates}
            assert found.keys() == expected.keys(), subject
            for other, distance in found.items():
                assert abs(distance - expected[other]) < 1e-4
            duplicates_seen += len(found)
            enrolled[subject] = face
    assert duplicates_seen  # the second photo of someone is a duplicate of the first
    assert raw_differs  # raw distances would have decided some pairs differently
