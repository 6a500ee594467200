"""The evaluation cache's key: every setting and version that changes a result, and only those."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import facetrust
from facetrust.batch import ImageResult, embed_many
from facetrust.config import Settings
from facetrust.evaluation import cache as cache_module
from facetrust.evaluation.cache import (
    PIPELINE_SOURCES,
    SETTINGS_NOT_IN_KEY,
    EmbeddingCache,
    pipeline_variant,
    pipeline_version,
)
from facetrust.pipeline import FacePipeline

from .conftest import DATA, SAMPLE

HARD = DATA / "hard_faces" / "Angela_Merkel" / "Angela_Merkel_0003.jpg"  # HOG finds no face
PHOTO = SAMPLE / "Jennifer_Lopez" / "Jennifer_Lopez_0001.jpg"  # 250 x 250, 62,500 pixels

#: Another valid value of each text setting.
_OTHER_TEXT = {
    "detector": "cnn", "fallback_detector": "none", "video_detector": "cnn",
    "embedder": "dlib", "augmentation": "mirror",
}


def _changed(settings: Settings, name: str) -> Settings:
    value = getattr(settings, name)
    if isinstance(value, bool):
        other: Any = not value
    elif isinstance(value, int | float):
        other = value + 1
    else:
        other = _OTHER_TEXT[name]  # a new text setting needs an entry here
    return dataclasses.replace(settings, **{name: other})


def _counting(calls: list[str]) -> Any:
    def compute(paths: list[str], settings: Any, **kwargs: Any) -> Iterable[ImageResult]:
        calls.extend(paths)
        return embed_many(paths, settings, **kwargs)

    return compute


def test_every_setting_is_in_the_key_but_the_listed_ones() -> None:
    base = Settings()
    key = pipeline_variant(base, "dominant", version="v")
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(SETTINGS_NOT_IN_KEY) <= names
    for name in sorted(names):
        changed = pipeline_variant(_changed(base, name), "dominant", version="v")
        if name in SETTINGS_NOT_IN_KEY:
            assert changed == key, name
        else:
            assert changed != key, f"{name} is not in the cache key"
    assert pipeline_variant(base, None, version="v") != key  # the face policy
    assert pipeline_variant(base, "dominant", version="w") != key  # the pipeline version
    # A number given as an int or read from the environment as a float is one setting.
    assert pipeline_variant(Settings(min_inter_eye_px=16), "dominant", version="v") == key


def test_runs_differing_only_in_fallback_detector_do_not_share_entries(tmp_path: Path) -> None:
    path, calls = tmp_path / "cache.sqlite", []
    with EmbeddingCache(path, Settings(fallback_detector="none"),
                        compute=_counting(calls)) as cache:
        without = cache.get_or_compute([HARD], workers=1)[str(HARD)]
    with EmbeddingCache(path, Settings(), compute=_counting(calls)) as cache:
        default = cache.get_or_compute([HARD], workers=1)[str(HARD)]
        assert cache.computed_ == 1 and cache.hits_ == 0
    with EmbeddingCache(path, Settings(), compute=_counting(calls)) as cache:
        again = cache.get_or_compute([HARD], workers=1)[str(HARD)]
        assert cache.computed_ == 0 and cache.hits_ == 1  # the same settings still hit
    assert len(calls) == 2
    live = FacePipeline(Settings()).embed_one(HARD)
    assert default.acquired and default.faces[0].box == live.face.box
    np.testing.assert_array_equal(again.faces[0].vector, default.faces[0].vector)
    # Without the CNN fallback the pipeline reads another face (or none) in this photo.
    assert not without.acquired or without.faces[0].box != live.face.box


@pytest.mark.parametrize(("setting", "cap"), [("max_pixels", 10_000), ("max_bytes", 1_000)])
def test_a_refusal_for_a_size_cap_is_not_served_to_another_cap(
    tmp_path: Path, setting: str, cap: int
) -> None:
    path, calls = tmp_path / "cache.sqlite", []
    capped = Settings(**{setting: cap})
    with EmbeddingCache(path, capped, compute=_counting(calls)) as cache:
        refused = cache.get_or_compute([PHOTO], workers=1)[str(PHOTO)]
    assert refused.error_type == "ImageTooLarge" and not refused.acquired
    with EmbeddingCache(path, Settings(), compute=_counting(calls)) as cache:
        assert cache.get_or_compute([PHOTO], workers=1)[str(PHOTO)].acquired
        assert cache.computed_ == 1 and cache.hits_ == 0
    with EmbeddingCache(path, capped, compute=_counting(calls)) as cache:
        again = cache.get_or_compute([PHOTO], workers=1)[str(PHOTO)]
        assert cache.hits_ == 1 and again.error_type == "ImageTooLarge"
    assert len(calls) == 2


def test_a_new_pipeline_version_recomputes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, calls = tmp_path / "cache.sqlite", []
    with EmbeddingCache(path, compute=_counting(calls)) as cache:
        cache.get_or_compute([PHOTO], workers=1)
    monkeypatch.setattr(cache_module, "pipeline_version", lambda: "0123456789abcdef")
    with EmbeddingCache(path, compute=_counting(calls)) as cache:
        cache.get_or_compute([PHOTO], workers=1)
        assert cache.computed_ == 1 and cache.hits_ == 0
    assert len(calls) == 2


def test_the_pipeline_version_covers_the_model_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    before = pipeline_version()
    assert before == pipeline_version() and len(before) == 16
    monkeypatch.setattr(cache_module, "weights_sha256", lambda path: "0" * 64)
    assert pipeline_version() != before


def _imports(file: Path, package: Path) -> set[Path]:
    """facetrust module files that ``file`` imports (relative or absolute, at any depth)."""
    found: set[Path] = set()

    def add(target: Path) -> None:
        for candidate in (target.with_suffix(".py"), target / "__init__.py"):
            if candidate.is_file():
                found.add(candidate)

    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or 0) > 0:
            base = file.parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base.joinpath(*node.module.split(".")) if node.module else base
            add(target)
            for alias in node.names:  # from .models import dlib_backend
                add(target / alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
            "facetrust."
        ):
            add(package.joinpath(*node.module.split(".")[1:]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("facetrust."):
                    add(package.joinpath(*alias.name.split(".")[1:]))
    return found


def test_the_pipeline_version_covers_every_module_the_pipeline_imports() -> None:
    package = Path(facetrust.__file__).resolve().parent
    seen: set[Path] = set()
    todo = [package / "batch.py", package / "pipeline.py"]
    todo += sorted((package / "models").glob("*.py"))  # loaded lazily, on first use
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(_imports(file, package) - seen)
    names = {f.relative_to(package).as_posix() for f in seen}
    missing = {
        n for n in names
        if n not in PIPELINE_SOURCES and not any(
            n.startswith(s) for s in PIPELINE_SOURCES if s.endswith("/")
        )
    }
    assert not missing, f"add to PIPELINE_SOURCES: {sorted(missing)}"


def test_thread_count_does_not_change_a_face_or_a_descriptor() -> None:
    """Why ``embedder_threads`` may stay out of the key (the CNN fallback runs here too)."""
    one = FacePipeline(Settings(embedder_threads=1)).embed_one(HARD)
    two = FacePipeline(Settings(embedder_threads=2)).embed_one(HARD)
    assert one.face.box == two.face.box and one.face.confidence == two.face.confidence
    np.testing.assert_array_equal(one.embedding.vector, two.embedding.vector)
