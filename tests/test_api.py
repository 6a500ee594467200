"""1:1 verification on real photos, operating points and template rules."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facetrust
from facetrust import Embedding, FacePipeline, compare, get_operating_point, operating_points
from facetrust.errors import InvalidParameter, MultipleFaces, OperatingPointError

#: Non-mated identity pairs of the sample that false-match at dlib's 0.6 and at the
#: calibrated default: sisters, and two East Asian men, the demographic gap the
#: fairness work measures (issue 9).
KNOWN_HARD_PAIRS = {("Serena_Williams", "Venus_Williams"), ("Hu_Jintao", "Junichiro_Koizumi")}


@pytest.mark.parametrize(
    "point,mated_misses",
    [("dlib-default", 0), (None, 1)],  # None: the calibrated default (fmr-1e-3, stricter)
)
def test_mated_pairs_match_and_non_mated_pairs_do_not(
    sample_embeddings: dict[Path, Embedding], point: str | None, mated_misses: int
) -> None:
    by_identity: dict[str, list[Embedding]] = {}
    for path, embedding in sample_embeddings.items():
        by_identity.setdefault(path.parent.name, []).append(embedding)
    mated = [
        compare(a, b, point)
        for embeddings in by_identity.values()
        for a, b in itertools.combinations(embeddings, 2)
    ]
    non_mated = {
        (x, y): [compare(a, b, point) for a, b in itertools.product(xs, ys)]
        for (x, xs), (y, ys) in itertools.combinations(sorted(by_identity.items()), 2)
    }
    assert len(mated) == 60 and len(non_mated) == 45
    misses = [v.distance for v in mated if not v.match]
    assert len(misses) <= mated_misses, misses
    for pair, verdicts in non_mated.items():
        if pair not in KNOWN_HARD_PAIRS:
            assert not any(v.match for v in verdicts), pair
    hard = [v.distance for p in KNOWN_HARD_PAIRS for v in non_mated[p]]
    easy = [v.distance for p, vs in non_mated.items() if p not in KNOWN_HARD_PAIRS for v in vs]
    assert np.mean([v.distance for v in mated]) < np.mean(hard) < np.mean(easy)


def test_verify_reports_distance_threshold_and_operating_point(
    photos: dict[str, list[Path]],
) -> None:
    a, b = photos["Hu_Jintao"][:2]
    verdict = facetrust.verify(a, b)
    default = get_operating_point()
    assert verdict.match
    assert verdict.threshold == default.threshold
    assert verdict.operating_point == default.name
    assert verdict.model_id == "dlib-resnet-v1"
    assert 0 < verdict.distance <= verdict.threshold


def test_exif_rotated_copy_gives_the_same_embedding(
    pipeline: FacePipeline, photos: dict[str, list[Path]], sample_embeddings: dict[Path, Embedding]
) -> None:
    path = photos["Kofi_Annan"][0]
    turned = Image.open(path).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    turned.save(buffer, "JPEG", quality=95, exif=exif)
    rotated = pipeline.embed_one(buffer.getvalue()).embedding
    assert compare(rotated, sample_embeddings[path]).distance < 0.05


def test_the_dominant_face_is_used_unless_the_policy_says_single(
    photos: dict[str, list[Path]], multi_face_photo: Path
) -> None:
    single = photos["Vicente_Fox"][0]
    # Vicente_Fox_0002 is framed on Fox; a second face is at its edge.
    assert facetrust.verify(multi_face_photo, single).match
    with pytest.raises(MultipleFaces):
        facetrust.verify(multi_face_photo, single, face_policy="single")
    verdict = facetrust.verify(multi_face_photo, single, face_policy="largest")
    assert verdict.match  # the largest face in Vicente_Fox_0002 is Vicente Fox


def test_unknown_operating_point_lists_the_known_ones(
    sample_embeddings: dict[Path, Embedding],
) -> None:
    a, b = list(sample_embeddings.values())[:2]
    with pytest.raises(OperatingPointError, match="Known: .*dlib-default"):
        compare(a, b, "no-such-point")
    assert {p.name for p in operating_points()} >= {"dlib-default"}


def test_templates_of_different_models_are_never_compared(
    sample_embeddings: dict[Path, Embedding],
) -> None:
    a = next(iter(sample_embeddings.values()))
    other = Embedding(a.vector, "another-model")
    with pytest.raises(InvalidParameter, match="different models"):
        compare(a, other)


def test_face_distance_matches_pairwise_compare(sample_embeddings: dict[Path, Embedding]) -> None:
    embeddings = list(sample_embeddings.values())
    gallery = np.stack([e.vector for e in embeddings])
    distances = facetrust.face_distance(gallery, embeddings[3].vector)
    assert distances[3] == 0
    for i in (0, 7, 20):
        assert distances[i] == pytest.approx(
            compare(embeddings[i], embeddings[3]).distance, abs=1e-6
        )


def test_embeddings_are_read_only(sample_embeddings: dict[Path, Embedding]) -> None:
    embedding = next(iter(sample_embeddings.values()))
    with pytest.raises(ValueError):
        embedding.vector[0] = 1.0
