"""Consented gallery: enrolment throughput and 1:N identification latency, beside
face_recognition's ``face_distance`` over the same templates.

* Enrolment: 1,000 real LFW photos (one per identity). The embedding part
  (``facetrust.embed_many``, 2 worker processes) and the store part (add
  subject, record consent, enrol: duplicate search, keyed rotation, AES-GCM
  under a fresh per-subject key, audit event; each its own transaction) are
  timed separately; end-to-end is their sum.
* Identification: ``Gallery.identify`` (consent filter, exact search, audit
  event + identification record written and synced) at 1k, 10k and 100k
  subjects. 1k is all real templates; 10k and 100k add synthetic templates
  drawn from a Gaussian with the mean and covariance of the real ones (bulk
  enrolled in ``Gallery.batch()`` transactions without duplicate search).
  Probes are real: a second photo of enrolled identities. The reference is
  ``face_recognition.face_distance(known_encodings, probe)`` over the same
  (unprotected) templates plus the threshold and top-k selection its users
  write, i.e. a search with no consent, audit or encryption.

Usage::

    python benchmarks/bench_gallery.py [--lfw ../shared/datasets/lfw] [--photos 1000]
        [--probes 200] [--sizes 1000,10000,100000] [--out benchmarks/results/gallery.json]

Needs ``pip install -e '.[bench]'`` and ``pip install --no-deps face_recognition``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import facetrust
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from timing import percentiles  # benchmarks/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
PURPOSE = "boarding"


def select_photos(lfw: Path, count: int) -> list[tuple[str, Path, Path]]:
    """(identity, enrolment photo, probe photo) of the first ``count`` identities with 2+."""
    chosen = []
    for folder in sorted((lfw / "lfw-deepfunneled").iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            chosen.append((folder.name, photos[0], photos[1]))
        if len(chosen) == count:
            break
    return chosen


def embed(paths: list[Path], workers: int) -> tuple[list[npt.NDArray[np.float32] | None], float]:
    """The largest face's template of each photo (None when no face), and the wall time."""
    start = time.perf_counter()
    vectors: list[npt.NDArray[np.float32] | None] = []
    for result in facetrust.embed_many(paths, workers=workers, progress=True):
        vectors.append(result.faces[0].embedding.vector if result.faces else None)
    return vectors, time.perf_counter() - start


def cached_embeddings(
    enrol_paths: list[Path], probe_paths: list[Path], workers: int
) -> tuple[list[npt.NDArray[np.float32] | None], list[npt.NDArray[np.float32] | None], float, bool]:
    """Embed (or reuse the embeddings, and the embedding time, of an earlier run on the same
    photos, kept in .bench/). Returns enrolment vectors, probe vectors, enrolment embedding
    seconds and whether they were reused."""
    cache = REPO / ".bench" / "gallery_embeddings.npz"
    key = "\n".join(str(p) for p in [*enrol_paths, *probe_paths])
    if cache.exists():
        saved = np.load(cache)
        if str(saved["key"]) == key:
            rows = [None if np.isnan(v).any() else v for v in saved["vectors"]]
            split = len(enrol_paths)
            return rows[:split], rows[split:], float(saved["embed_s"]), True
    enrol, embed_s = embed(enrol_paths, workers)
    probes, _ = embed(probe_paths, workers)
    stacked = np.stack(
        [np.full(128, np.nan, np.float32) if v is None else v for v in [*enrol, *probes]]
    )
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, key=np.array(key), vectors=stacked, embed_s=np.array(embed_s))
    return enrol, probes, embed_s, False



def grant(gallery: Gallery, subject_id: str) -> None:
    gallery.grant_consent(
        subject_id,
        [PURPOSE],
        expires_at=gallery.now() + timedelta(days=365),
        evidence_ref=f"form-{subject_id}",
        evidence_sha256="ab" * 32,
        notice_version="bench-v1",
        actor="registrar",
    )


def enrol_real(
    gallery: Gallery, names: list[str], vectors: list[npt.NDArray[np.float32]], model_id: str
) -> float:
    """One subject at a time, each step its own transaction; returns seconds."""
    start = time.perf_counter()
    for name, vector in zip(names, vectors, strict=True):
        gallery.add_subject(name, actor="registrar")
        grant(gallery, name)
        gallery.enroll(name, [Embedding(vector, model_id)], actor="registrar")
    return time.perf_counter() - start


def enrol_synthetic(
    gallery: Gallery, vectors: npt.NDArray[np.float32], first: int, model_id: str
) -> float:
    """Bulk-enrol synthetic templates in batches of 5,000; returns seconds."""
    start = time.perf_counter()
    for offset in range(0, len(vectors), 5000):
        with gallery.batch():
            for i, vector in enumerate(vectors[offset : offset + 5000], start=first + offset):
                subject_id = f"synthetic-{i:06d}"
                gallery.add_subject(subject_id, actor="importer")
                grant(gallery, subject_id)
                gallery.enroll(
                    subject_id,
                    [Embedding(vector, model_id)],
                    actor="importer",
                    check_duplicates=False,
                )
    return time.perf_counter() - start


def time_queries(
    gallery: Gallery,
    probes: list[tuple[str, npt.NDArray[np.float32]]],
    model_id: str,
    known: npt.NDArray[np.float64],
    known_names: list[str],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time facetrust and the reference on the same probes, alternating query by query so
    that both meet the same load on a shared machine."""
    import face_recognition

    cold_start = time.perf_counter()
    index = gallery.parts.indexes.get(model_id)  # build (decrypt) once; later searches reuse it
    cold = time.perf_counter() - cold_start
    point = gallery.parts.operating_point(model_id)
    secret = gallery.parts.keyring.template_secret()
    ours: list[float] = []
    search_only: list[float] = []
    theirs: list[float] = []
    ours_right = theirs_right = 0
    for name, vector in probes:
        start = time.perf_counter()
        result = gallery.identify(
            Embedding(vector, model_id), purpose=PURPOSE, actor="officer", k=5, case_ref="bench"
        )
        ours.append(time.perf_counter() - start)
        ours_right += bool(result.candidates) and result.candidates[0].subject_id == name

        protected = facetrust.crypto.protect(vector, secret)
        start = time.perf_counter()
        index.search(protected, purpose=PURPOSE, now=gallery.now(), k=5, threshold=point.threshold)
        search_only.append(time.perf_counter() - start)

        start = time.perf_counter()
        distances = face_recognition.face_distance(known, vector)
        within = np.flatnonzero(distances <= point.threshold)
        top = within[np.argsort(distances[within])][:5]
        theirs.append(time.perf_counter() - start)
        theirs_right += bool(len(top)) and known_names[top[0]] == name
    facetrust_row = {
        "identify": percentiles(ours, decimals=None),
        "search_only": percentiles(search_only, decimals=None),
        "index_build_s": cold,
        "rank1": ours_right / len(probes),
    }
    reference_row = {
        "face_distance": percentiles(theirs, decimals=None),
        "rank1": theirs_right / len(probes),
    }
    return facetrust_row, reference_row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "gallery.json"
    )
    args = parser.parse_args()
    if not (args.lfw / "lfw-deepfunneled").is_dir():
        raise SystemExit(f"LFW not found at {args.lfw}; pass --lfw (skipping the benchmark).")
    sizes = [int(s) for s in args.sizes.split(",")]
    selected = select_photos(args.lfw, args.photos)

    enrol_paths = [e for _, e, _ in selected]
    probe_paths = [p for _, _, p in selected[: args.probes]]
    enrol_vectors, probe_vectors, embed_enrol_s, reused = cached_embeddings(
        enrol_paths, probe_paths, args.workers
    )
    model_id = facetrust.default_pipeline().model_id
    kept = [(n, v) for (n, _, _), v in zip(selected, enrol_vectors, strict=True) if v is not None]
    names = [n for n, _ in kept]
    real = np.stack([v for _, v in kept])
    enrolled = set(names)
    probes = [
        (n, v)
        for (n, _, _), v in zip(selected, probe_vectors, strict=False)
        if v is not None and n in enrolled
    ]

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_at_start": os.getloadavg(),
        },
        "photos": len(selected),
        "enrolled_real": len(kept),
        "no_face": len(selected) - len(kept),
        "probes": len(probes),
    }
    scratch = REPO / ".bench"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        gallery, _ = Gallery.init_folder(Path(tmp) / "gallery")
        with gallery:
            store_s = enrol_real(gallery, names, list(real), model_id)
            results["enrolment"] = {
                "embedding_s": embed_enrol_s,
                "store_s": store_s,
                "store_subjects_per_s": len(kept) / store_s,
                "end_to_end_subjects_per_s": len(kept) / (embed_enrol_s + store_s),
                "embedding_workers": args.workers,
                "embedding_time_from_earlier_run": reused,
            }
            rng = np.random.default_rng(0)
            mean, cov = real.mean(axis=0), np.cov(real, rowvar=False)
            synthetic = rng.multivariate_normal(mean, cov, size=max(sizes) - len(kept))
            synthetic = synthetic.astype(np.float32)
            sample = synthetic[:1000].astype(np.float64)
            real64 = real.astype(np.float64)

            def pair_stats(x: npt.NDArray[np.float64]) -> dict[str, float]:
                d = np.linalg.norm(x[:, None] - x[None], axis=2)[np.triu_indices(len(x), 1)]
                return {"mean": float(d.mean()), "std": float(d.std())}

            results["template_statistics"] = {
                "real_impostor_distance": pair_stats(real64[:1000]),
                "synthetic_pair_distance": pair_stats(sample),
            }
            table = []
            bulk_s, bulk_n, size_now = 0.0, 0, len(kept)
            for size in sizes:
                if size > size_now:
                    part = synthetic[size_now - len(kept) : size - len(kept)]
                    bulk_s += enrol_synthetic(gallery, part, size_now, model_id)
                    bulk_n += len(part)
                    size_now = size
                known = np.concatenate([real, synthetic[: size_now - len(kept)]]).astype(np.float64)
                known_names = names + [f"synthetic-{i:06d}" for i in range(len(kept), size_now)]
                ours, reference = time_queries(gallery, probes, model_id, known, known_names)
                row = {
                    "gallery_size": size_now,
                    "real": len(kept),
                    "synthetic": size_now - len(kept),
                    "facetrust": ours,
                    "face_recognition": reference,
                    "db_bytes": gallery.config.db_path.stat().st_size,
                }
                table.append(row)
                print(json.dumps(row))
            results["identification"] = table
            if bulk_n:
                results["bulk_enrolment"] = {
                    "subjects": bulk_n,
                    "seconds": bulk_s,
                    "subjects_per_s": bulk_n / bulk_s,
                }
            results["audit_ok"] = gallery.audit.verify().ok
    results["load_avg_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")


def print_table(results: dict[str, Any]) -> None:
    e = results["enrolment"]
    print(
        f"\nEnrolment, {results['enrolled_real']} real LFW photos "
        f"({results['no_face']} without a detected face):"
    )
    print(f"  embedding ({e['embedding_workers']} workers): {e['embedding_s']:.1f} s")
    print(
        f"  store+crypto+audit, one subject per transaction: {e['store_subjects_per_s']:.1f} "
        "subjects/s"
    )
    print(f"  end to end: {e['end_to_end_subjects_per_s']:.1f} subjects/s")
    if "bulk_enrolment" in results:
        b = results["bulk_enrolment"]
        print(f"  bulk (Gallery.batch, synthetic): {b['subjects_per_s']:.0f} subjects/s")
    print(
        "\n| gallery | templates | facetrust identify p50 / p99 ms | facetrust search only "
        "p50 / p99 ms | face_distance p50 / p99 ms | rank-1 ours / ref | index build s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in results["identification"]:
        ours, ref = row["facetrust"], row["face_recognition"]
        print(
            f"| {row['gallery_size']:,} | {row['real']:,} real + {row['synthetic']:,} synthetic "
            f"| {ours['identify']['p50_ms']:.2f} / {ours['identify']['p99_ms']:.2f} "
            f"| {ours['search_only']['p50_ms']:.2f} / {ours['search_only']['p99_ms']:.2f} "
            f"| {ref['face_distance']['p50_ms']:.2f} / {ref['face_distance']['p99_ms']:.2f} "
            f"| {ours['rank1']:.3f} / {ref['rank1']:.3f} | {ours['index_build_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
