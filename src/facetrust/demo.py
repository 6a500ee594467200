"""The README's demo: detect faces and verify a mated and a non-mated pair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .api import default_pipeline
from .errors import InvalidParameter
from .matching import compare


def photo_folders(photos: Path) -> list[Path]:
    """Identity folders under ``photos`` holding at least two JPEGs, sorted by name."""
    folders = sorted(p for p in photos.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2)
    if len(folders) < 2:
        raise InvalidParameter(
            f"The demo needs a folder with at least two identity subfolders of two or more "
            f"JPEGs each. {str(photos)!r} has {len(folders)}. Run it from the repository root "
            "or pass --photos tests/data/lfw."
        )
    return folders


def run_face_demo(photos: Path, echo: Callable[[str], None] = print) -> bool:
    """Detect and verify on the sample photos; returns True when both decisions are right."""
    folders = photo_folders(photos)
    pipeline = default_pipeline()
    first = sorted(folders[0].glob("*.jpg"))
    other = sorted(folders[1].glob("*.jpg"))
    a, b, c = first[0], first[1], other[0]
    for path in (a, b, c):
        faces = pipeline.detect(path)
        for face in faces:
            q = face.quality
            echo(
                f"detected {path.name}: box {face.box.to_dict()}, "
                f"inter-eye {q.inter_eye_px:.0f} px, "
                f"sharpness {q.sharpness:.0f}, quality {'ok' if q.passed else 'FAIL'}"
            )
    mated = compare(pipeline.embed_one(a).embedding, pipeline.embed_one(b).embedding)
    non_mated = compare(pipeline.embed_one(a).embedding, pipeline.embed_one(c).embedding)
    for label, x, y, verdict in (
        ("same person", a, b, mated),
        ("different people", a, c, non_mated),
    ):
        echo(
            f"verify {x.name} vs {y.name} ({label}): "
            f"{'MATCH' if verdict.match else 'NO MATCH'}, distance {verdict.distance:.3f} "
            f"(threshold {verdict.threshold} at operating point {verdict.operating_point})"
        )
    return mated.match and not non_mated.match
