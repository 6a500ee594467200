"""The "after" code of docs/compat.md runs: shim encodings searched in a consented Gallery."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import facetrust.compat.face_recognition as face_recognition
from facetrust import Embedding
from facetrust.gallery import Gallery
from facetrust.models.dlib_backend import DLIB_RESNET_MODEL_ID

pytestmark = pytest.mark.slow  # builds a gallery from the guide's code


def test_compare_faces_loop_becomes_a_consented_gallery_search(
    images: Path, tmp_path: Path
) -> None:
    gallery, _ = Gallery.init_folder(tmp_path / "gallery")
    evidence = hashlib.sha256(b"signed consent form").hexdigest()
    for person in ("obama", "biden"):
        gallery.add_subject(person, actor="guide")
        gallery.grant_consent(
            person,
            ["photo-library"],
            expires_at=datetime.now(UTC) + timedelta(days=365),
            evidence_ref=f"form-{person}",
            evidence_sha256=evidence,
            notice_version="v1",
            actor="guide",
        )
    # A photo enrols as before; an encoding the shim made enrols as a template too
    # (same network, same model id).
    gallery.enroll("obama", [images / "obama.jpg"], actor="guide")
    biden = face_recognition.face_encodings(face_recognition.load_image_file(images / "biden.jpg"))
    gallery.enroll("biden", [Embedding(biden[0], DLIB_RESNET_MODEL_ID)], actor="guide")

    # The webcam example's loop body, with the gallery in place of compare_faces.
    frame = face_recognition.load_image_file(images / "obama2.jpg")
    locations = face_recognition.face_locations(frame)
    names = []
    for encoding in face_recognition.face_encodings(frame, locations):
        probe = Embedding(encoding, DLIB_RESNET_MODEL_ID)
        result = gallery.identify(probe, purpose="photo-library", actor="guide", k=1,
            case_ref="CASE-1")
        names.append(result.candidates[0].subject_id if result.candidates else "Unknown")
    assert names == ["obama"]

    assert (
        gallery.identify(
            Embedding(biden[0], DLIB_RESNET_MODEL_ID), purpose="photo-library", actor="guide", k=1,
                case_ref="CASE-1"
        )
        .candidates[0]
        .subject_id
        == "biden"
    )
    gallery.close()
