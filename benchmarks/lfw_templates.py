"""Real dlib templates of LFW identities with two or more photos, computed once and cached.

The synthetic template model (:mod:`facetrust.index.synthetic`) is fitted to these.
Identities with at least two photos are shuffled with a fixed seed and up to
``--per-identity`` photos of each are taken until ``--images`` photos are chosen;
each photo's largest face is embedded with :func:`facetrust.embed_many`.
The result is cached as ``.bench/lfw_templates.npz`` (git-ignored) with arrays
``vectors`` (n, 128) float32, ``labels`` (n,) int64 identity numbers, ``names``
(identities) and ``paths`` (photo paths relative to the dataset).

Usage::

    nice -n 10 python benchmarks/lfw_templates.py [--lfw ../shared/datasets/lfw]
        [--images 2000] [--per-identity 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

import facetrust

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".bench" / "lfw_templates.npz"


def choose_photos(root: Path, images: int, per_identity: int, seed: int = 0) -> list[Path]:
    """Up to ``per_identity`` photos each of shuffled multi-photo identities, ``images`` in all."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    identities = [sorted(f.glob("*.jpg")) for f in folders]
    identities = [photos for photos in identities if len(photos) >= 2]
    random.Random(seed).shuffle(identities)
    chosen: list[Path] = []
    for photos in identities:
        chosen.extend(photos[:per_identity])
        if len(chosen) >= images:
            break
    return chosen[:images]


def load_templates(
    lfw: Path, images: int = 2000, per_identity: int = 3, workers: int = 2
) -> dict[str, npt.NDArray[np.generic]]:
    """The cached templates, computing them first when the cache is missing or too small."""
    if CACHE.exists():  # delete it to recompute with other settings
        return dict(np.load(CACHE, allow_pickle=False))
    root = lfw / "lfw-deepfunneled"
    if not root.is_dir():
        sys.exit(f"LFW not found at {root}; pass --lfw PATH (see its SOURCE.md).")
    photos = choose_photos(root, images, per_identity)
    vectors, names, paths = [], [], []
    start = time.perf_counter()
    for result in facetrust.embed_many(photos, workers=workers, progress=True):
        if not result.faces:
            continue
        vectors.append(result.faces[0].embedding.vector)
        path = Path(result.source)
        names.append(path.parent.name)
        paths.append(str(path.relative_to(root)))
    print(f"embedded {len(vectors)}/{len(photos)} photos in {time.perf_counter() - start:.0f} s")
    identities = sorted(set(names))
    number = {name: i for i, name in enumerate(identities)}
    data: dict[str, npt.NDArray[np.generic]] = {
        "vectors": np.asarray(vectors, dtype=np.float32),
        "labels": np.asarray([number[n] for n in names], dtype=np.int64),
        "names": np.asarray(identities),
        "paths": np.asarray(paths),
    }
    CACHE.parent.mkdir(exist_ok=True)
    tmp = CACHE.with_suffix(".tmp.npz")
    np.savez(tmp, **data)  # type: ignore[arg-type]
    tmp.replace(CACHE)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--per-identity", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data = load_templates(args.lfw, args.images, args.per_identity, args.workers)
    print(f"{len(data['vectors'])} templates of {len(data['names'])} identities in {CACHE}")


if __name__ == "__main__":
    main()
