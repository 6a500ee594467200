"""Template protection (ISO/IEC 24745): unlinkability across galleries, renewability."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.metrics import roc_auc_score

from facetrust import crypto
from facetrust.faces import Embedding
from facetrust.gallery import Gallery

MODEL = "dlib-resnet-v1"


def stored_vectors(gallery: Gallery) -> dict[str, list[npt.NDArray[np.float32]]]:
    """The protected templates a gallery holds, decrypted, by subject (copies: the
    index's rows are updated in place by the next change)."""
    index = gallery.parts.indexes.get(MODEL)
    result: dict[str, list[npt.NDArray[np.float32]]] = {}
    for owner, vector in zip(index.owners, index.vectors, strict=True):
        result.setdefault(index.subject_ids[owner], []).append(vector.copy())
    return result


def enrol_every_photo(
    gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    for name, paths in identities.items():
        gallery.add_subject(name, actor="registrar")
        grant(gallery, name)
        gallery.enroll(name, [embeddings[p] for p in paths], actor="registrar")


def test_rotation_keeps_distances_exactly(embeddings: dict[Path, Embedding]) -> None:
    vectors = np.stack([e.vector for e in embeddings.values()]).astype(np.float64)
    protected = crypto.protect(vectors, crypto.generate_key()).astype(np.float64)
    before = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    after = np.linalg.norm(protected[:, None] - protected[None], axis=2)
    assert np.max(np.abs(before - after)) < 1e-5
    matrix = crypto.rotation_matrix(b"k" * 32, 128)
    assert np.allclose(matrix @ matrix.T, np.eye(128), atol=1e-12)


def test_cross_gallery_scores_of_the_same_person_look_like_impostor_scores(
    make_gallery: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Any,
) -> None:
    first, second = make_gallery("a"), make_gallery("b")
    for gallery in (first, second):
        enrol_every_photo(gallery, identities, embeddings, grant)
    a, b = stored_vectors(first), stored_vectors(second)
    threshold = first.parts.operating_point(MODEL).threshold

    def scores(left: dict[str, Any], right: dict[str, Any], mated: bool) -> list[float]:
        return [
            float(np.linalg.norm(u - v))
            for x in left
            for y in right
            if (x == y) == mated
            for u in left[x]
            for v in right[y]
            if not (left is right and u is v)
        ]

    within_mated, within_impostor = scores(a, a, True), scores(a, a, False)
    cross_mated, cross_impostor = scores(a, b, True), scores(a, b, False)
    # inside one gallery, the same person is told apart from impostors ...
    within_auc = roc_auc_score(
        [1] * len(within_impostor) + [0] * len(within_mated), within_impostor + within_mated
    )
    assert within_auc > 0.95
    # ... across galleries, same-person scores are indistinguishable from impostor ones
    cross_auc = roc_auc_score(
        [1] * len(cross_impostor) + [0] * len(cross_mated), cross_impostor + cross_mated
    )
    assert 0.35 < cross_auc < 0.65, cross_auc
    assert min(cross_mated) > threshold  # no cross-gallery pair would ever match
    assert len(cross_mated) == 160


def test_rekeying_renews_every_template_without_reenrolment(
    sample_gallery: Gallery, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    gallery = sample_gallery
    probes = [embeddings[paths[3]] for paths in identities.values()]
    before = [gallery.identify(p, purpose="boarding", actor="officer",
        case_ref="CASE-1") for p in probes]
    old_vectors = stored_vectors(gallery)
    old_ciphertexts = {t.template_id: t.ciphertext for t in gallery.store.all_templates()}

    result = gallery.rekey_templates(actor="admin")
    assert result.rewrapped == 20

    new_ciphertexts = {t.template_id: t.ciphertext for t in gallery.store.all_templates()}
    assert new_ciphertexts.keys() == old_ciphertexts.keys()
    assert all(new_ciphertexts[t] != old_ciphertexts[t] for t in old_ciphertexts)
    new_vectors = stored_vectors(gallery)
    threshold = gallery.parts.operating_point(MODEL).threshold
    for subject, vectors in new_vectors.items():
        for old, new in zip(old_vectors[subject], vectors, strict=True):
            assert np.linalg.norm(old - new) > threshold  # old copies no longer link
    after = [gallery.identify(p, purpose="boarding", actor="officer",
        case_ref="CASE-1") for p in probes]
    for x, y in zip(before, after, strict=True):
        assert [c.subject_id for c in x.candidates] == [c.subject_id for c in y.candidates]
        assert [c.distance for c in x.candidates] == pytest.approx(
            [c.distance for c in y.candidates], abs=1e-5
        )
    assert gallery.audit.verify().ok


def test_a_secret_renewed_by_another_process_is_used_at_the_next_search(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
) -> None:
    gallery = sample_gallery
    name, paths = next(iter(identities.items()))
    probe = embeddings[paths[3]]
    before = gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    assert before.candidates[0].subject_id == name  # the secret is now held in memory

    with Gallery.open(gallery.config, master_key=master_key) as other:
        other.rekey_templates(actor="admin")

    after = gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    assert after.candidates[0].subject_id == name
    assert after.candidates[0].distance == pytest.approx(before.candidates[0].distance, abs=1e-5)
    verified = gallery.verify_subject(probe, name, purpose="boarding", actor="officer",
        case_ref="CASE-1")
    assert verified.match
