"""Group labels and per-group error rates on the sample photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facetrust.errors import EvaluationError
from facetrust.evaluation.bootstrap import identity_bootstrap_ci
from facetrust.evaluation.cache import CachedImage
from facetrust.evaluation.demographics import (
    audit_groups,
    is_wrong_face,
    load_labels,
    pairwise_distances,
)

from .conftest import LABELS


def test_lfw_label_files_load_per_image_and_per_identity() -> None:
    gender, race = load_labels(LABELS)
    assert gender.attribute == "gender" and race.attribute == "race"
    assert gender.by_image["Serena_Williams_0001"] == "female"
    assert gender.group_of("x/Kofi_Annan/Kofi_Annan_0003.jpg") == "male"
    # Only single-label identities count for race.
    assert race.by_identity == {"Jennifer_Lopez": "latino", "Serena_Williams": "african"}
    assert race.excluded == {"identities with several labels": 2}


def test_conflicting_gender_lines_are_excluded(tmp_path: Path) -> None:
    (tmp_path / "male_names.txt").write_text("A_0001.jpg\nB_0001.jpg\n")
    (tmp_path / "female_names.txt").write_text("A_0001.jpg\n")
    (gender,) = load_labels(tmp_path)
    assert gender.by_image == {"B_0001": "male"}
    assert gender.excluded == {"images in both files": 1}


def test_audit_reports_groups_small_groups_and_differentials(
    sample_images: dict[str, CachedImage],
) -> None:
    audit = audit_groups(sample_images, load_labels(LABELS), 0.6, min_pairs=20)
    by_name = {(g.attribute, g.group): g for g in audit.groups}
    female, male = by_name[("gender", "female")], by_name[("gender", "male")]
    assert (female.n_identities, male.n_identities) == (4, 6)
    # Mated: C(4,2) per identity; non-mated: every cross-identity pair within the group.
    assert female.n_mated == 4 * 6 and female.n_non_mated == 16 * 15 // 2 - 24
    assert male.n_mated == 6 * 6 and male.n_non_mated == 24 * 23 // 2 - 36
    assert female.status == male.status == "ok"
    assert female.fmr is not None and female.fmr_ci is not None
    assert female.fmr_ci[0] <= female.fmr <= female.fmr_ci[1]
    # One identity: no non-mated pairs within the group -> reported, not crashed.
    latino = by_name[("race", "latino")]
    assert latino.n_non_mated == 0 and latino.fmr is None
    assert latino.status.startswith("too few pairs")
    gender_diff = next(d for d in audit.differentials if d.attribute == "gender")
    assert set(gender_diff.groups) == {"female", "male"}
    fnmrs = [female.fnmr, male.fnmr]
    if min(fnmrs) > 0:  # type: ignore[type-var]
        assert gender_diff.fnmr_ratio == pytest.approx(max(fnmrs) / min(fnmrs))  # type: ignore[type-var, operator]
    race_diff = next(d for d in audit.differentials if d.attribute == "race")
    assert race_diff.groups == () and race_diff.fmr_ratio is None
    json.dumps(audit.to_dict())


def test_rates_follow_the_threshold(sample_images: dict[str, CachedImage]) -> None:
    labels = load_labels(LABELS)
    loose = audit_groups(sample_images, labels, 0.9, replicates=20)
    strict = audit_groups(sample_images, labels, 0.3, replicates=20)
    for a, b in zip(loose.groups, strict.groups, strict=True):
        if a.fmr is not None and b.fmr is not None:
            assert a.fmr >= b.fmr
        if a.fnmr is not None and b.fnmr is not None:
            assert a.fnmr <= b.fnmr


def test_labels_naming_unknown_images_are_counted(
    tmp_path: Path, sample_images: dict[str, CachedImage]
) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(
        "image_or_identity,attribute,value\n"
        "Kofi_Annan,region,africa\n"
        "Serena_Williams,region,americas\n"
        "Venus_Williams,region,americas\n"
        "Nobody_Known,region,europe\n"
        "Nobody_Known_0001.jpg,camera,film\n"
    )
    labels = load_labels(csv_file)
    audit = audit_groups(sample_images, labels, 0.6, replicates=20)
    notes = {n["attribute"]: n for n in audit.label_notes}
    assert notes["region"]["labels_naming_unknown_images_or_identities"] == 1
    assert notes["camera"]["labels_naming_unknown_images_or_identities"] == 1
    assert {g.group for g in audit.groups} == {"africa", "americas"}


def test_labels_that_match_nothing_are_an_error(
    tmp_path: Path, sample_images: dict[str, CachedImage]
) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("Nobody_Known,region,europe\n")
    with pytest.raises(EvaluationError, match="None of the labels"):
        audit_groups(sample_images, load_labels(csv_file), 0.6)


@pytest.mark.parametrize("text", ["a,b\n", "a,,c\n"])
def test_malformed_labels_csv_names_the_line(tmp_path: Path, text: str) -> None:
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(text)
    with pytest.raises(EvaluationError, match="line 1"):
        load_labels(csv_file)


def test_missing_labels_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="does not exist"):
        load_labels(tmp_path / "missing.csv")
    with pytest.raises(EvaluationError, match="neither"):
        load_labels(tmp_path)


def test_identity_bootstrap_interval() -> None:
    errors = np.array([True, False, False, False] * 25)
    ids = np.repeat(np.arange(25), 4)
    low, high = identity_bootstrap_ci(errors, ids, replicates=200, seed=1)
    assert low <= 0.25 <= high
    # Same seed, same interval.
    assert (low, high) == identity_bootstrap_ci(errors, ids, replicates=200, seed=1)
    # Errors concentrated on few identities widen the interval.
    clustered = np.repeat(np.arange(100) < 25, 1)
    low2, high2 = identity_bootstrap_ci(clustered, np.repeat(np.arange(4), 25), replicates=200)
    assert high2 - low2 > high - low


def test_pairwise_distances_match_direct_computation() -> None:
    x = np.random.default_rng(0).random((5, 8))
    expected = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    np.testing.assert_allclose(pairwise_distances(x), expected, atol=1e-7)


def test_first_pass_failures_to_acquire_are_counted_per_group(
    sample_images: dict[str, CachedImage],
) -> None:
    serena = {p for p in sample_images if "Serena_Williams_000" in p}
    missed = set(sorted(serena)[:2])
    audit = audit_groups(
        sample_images, load_labels(LABELS), 0.6, replicates=10, first_pass_missed=missed
    )
    by_name = {(g.attribute, g.group): g for g in audit.groups}
    assert by_name[("gender", "female")].fta_first_pass_images == 2
    assert by_name[("gender", "female")].fta_first_pass_rate == pytest.approx(2 / 16)
    assert by_name[("race", "african")].fta_first_pass_rate == pytest.approx(2 / 4)
    assert by_name[("gender", "male")].fta_first_pass_images == 0
    assert by_name[("gender", "male")].fta_images == 0  # the embeddings themselves are intact


def _image(boxes: list[tuple[int, int, int, int]]) -> CachedImage:
    from facetrust.evaluation.cache import CachedFace
    from facetrust.faces import Box

    faces = tuple(CachedFace(Box(*b), 1.0, np.zeros(128, np.float32)) for b in boxes)
    return CachedImage("x", 250, 250, faces)


def test_wrong_face_is_an_off_centre_subject_or_a_larger_bystander() -> None:
    centred = (85, 85, 165, 165)
    assert not is_wrong_face(_image([centred]))
    assert not is_wrong_face(_image([]))  # no face is a failure to acquire, not a wrong face
    assert is_wrong_face(_image([(0, 0, 60, 60)]))  # the only face is in a corner
    # Largest first: a big bystander beside a small centred subject.
    assert is_wrong_face(_image([(150, 20, 250, 120), (105, 105, 145, 145)]))
    assert not is_wrong_face(_image([centred, (0, 0, 30, 30)]))


def test_wrong_face_and_fta_rates_are_reported_per_group(
    sample_images: dict[str, CachedImage],
) -> None:
    audit = audit_groups(sample_images, load_labels(LABELS), 0.6, min_pairs=20, replicates=50)
    for group in audit.groups:
        expected = sum(
            is_wrong_face(image)
            for path, image in sample_images.items()
            if next(a for a in load_labels(LABELS) if a.attribute == group.attribute).group_of(
                path
            ) == group.group
        )
        assert group.wrong_face_images == expected
        assert group.fta_ci is not None and group.wrong_face_ci is not None
        assert group.to_dict()["wrong_face_rate"] == expected / group.n_images


def test_audit_at_a_normalized_point_counts_normalized_distances(
    sample_images: dict[str, CachedImage],
) -> None:
    from facetrust.matching import get_operating_point

    point = get_operating_point("fmr-1e-3-fair")
    labels = load_labels(LABELS)
    audit = audit_groups(
        sample_images, labels, point.threshold, min_pairs=20, replicates=20,
        normalizer=point.score_normalizer(),
    )
    gender = next(a for a in labels if a.attribute == "gender")
    female = sorted(p for p in sample_images if gender.group_of(p) == "female")
    vectors = np.stack([sample_images[p].subject_face().vector for p in female])  # type: ignore[union-attr]
    ids = np.array([Path(p).parent.name for p in female])
    i, j = np.triu_indices(len(female), 1)
    cross = ids[i] != ids[j]
    raw = np.linalg.norm(vectors[i] - vectors[j], axis=1).astype(np.float64)
    adjusted = point.adjusted_distances(raw, vectors[i], vectors[j])
    assert not np.allclose(adjusted, raw)  # the normalizer really moves distances
    expected = float(np.mean(adjusted[cross] <= point.threshold))
    result = next(g for g in audit.groups if g.group == "female")
    assert result.fmr == pytest.approx(expected)
    assert result.n_non_mated == int(cross.sum())


def test_refused_photos_count_as_false_rejects_beside_the_fnmr(
    sample_images: dict[str, CachedImage],
) -> None:
    """A labelled photo the pipeline refuses: its mated pairs are rejects, not left out."""
    refused = str(Path(next(iter(sample_images))).parents[1] / "Serena_Williams"
                  / "Serena_Williams_0005.jpg")
    with_refusal = {**sample_images,
                    refused: CachedImage("0" * 64, 250, 250, (), "NoFaceFound", "no face")}
    labels = load_labels(LABELS)
    before = {(g.attribute, g.group): g for g in audit_groups(sample_images, labels, 0.6).groups}
    after = {(g.attribute, g.group): g for g in audit_groups(with_refusal, labels, 0.6).groups}
    african = after[("race", "african")]  # Serena Williams: 4 photos and the refused one
    assert african.fta_images == 1 and african.fta_mated_pairs == 4
    # FNMR keeps its standard definition: the compared pairs, unchanged.
    assert (african.n_mated, african.fnmr) == (before[("race", "african")].n_mated,
                                               before[("race", "african")].fnmr)
    assert african.fnmr is not None and african.false_reject_rate is not None
    expected = (african.fnmr * african.n_mated + 4) / (african.n_mated + 4)
    assert african.false_reject_rate == pytest.approx(expected)
    assert african.false_reject_ci is not None
    assert african.false_reject_ci[0] <= african.false_reject_rate <= african.false_reject_ci[1]
    for key, group in after.items():
        assert (group.fmr, group.n_non_mated) == (before[key].fmr, before[key].n_non_mated)
        if key != ("race", "african"):
            assert group.fta_mated_pairs == 0 and group.false_reject_rate == group.fnmr
    row = african.to_dict()
    assert row["fta_mated_pairs"] == 4 and row["false_reject_rate"] == african.false_reject_rate
