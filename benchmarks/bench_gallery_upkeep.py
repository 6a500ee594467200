"""Gallery index upkeep: what one enrolment costs the next identification.

The in-memory search index of a gallery follows the store. Before the store
kept a change log, every change (a subject, a consent, a template) made the
next search re-read and digest every stored template (ciphertext included),
every subject, consent and data key: linear in the gallery, seconds at a
million templates. Now the index applies the store's change log
(``Store.changes_since``): it decrypts only the new template and re-reads only
the changed subjects.

For each gallery size, in one run and on the same gallery:

* ``after`` -- this code: the index follows the change log;
* ``before`` -- the full reload that every change used to cost: the same code
  with a store whose change log is never available (``changes_since`` returns
  None), so the index falls back to reading the whole store, as it did on
  every change before (commit fffe6ce).

Each round enrols one new subject through the public API (add subject, grant
consent, enrol with the duplicate search: three transactions), then measures

* ``upkeep_ms`` -- bringing the index up to date with the last change (the
  enrolment's template; the duplicate search already applied the subject and
  its consent), i.e. ``SearchIndexes.get`` right after the change;
* ``identify_after_change_ms`` -- one ``Gallery.identify`` right after another
  enrolment (upkeep + search + audit);
* ``identify_warm_ms`` -- ``Gallery.identify`` with nothing changed.

The first change after loading pays once for growing the index's row storage
(it doubles its capacity: ``upkeep_ms_all[0]``); the medians are of five
changes. On this 2-core machine shared with other jobs, the "before" seconds
vary with the load (the full reload is CPU- and memory-bound).

Galleries: real LFW templates, one subject per LFW photo in which the dlib
pipeline finds a face (13,163 of the 13,233 photos of ``lfw-deepfunneled``,
embedded once and cached in ``.bench/lfw_every_photo.npz``; the issue's
12,408-subject gallery was built otherwise); 100k and 1M synthetic
templates drawn from :class:`facetrust.index.synthetic.TemplateModel` fitted to
those real ones (as ``bench_index.py`` does). Galleries are built with a bulk
path that writes a real gallery through the store API (per-subject data keys
wrapped by the master key, templates protected and sealed with AES-GCM,
consents), in large transactions; the public enrolment API would take hours at
1M on this machine.

Usage::

    nice -n 10 python benchmarks/bench_gallery_upkeep.py [--lfw ../shared/datasets/lfw]
        [--sizes real,100000,1000000] [--rounds 5] [--out benchmarks/results/gallery_upkeep.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import facetrust
from facetrust import crypto
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.gallery.keyring import data_key_label, template_label
from facetrust.index.synthetic import TemplateModel
from facetrust.store import (
    ConsentRecord,
    SqliteKeyStore,
    SqliteStore,
    StoreChanges,
    SubjectRecord,
    TemplateRecord,
)
from timing import machine  # beside this script

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".bench" / "lfw_every_photo.npz"
PURPOSE = "boarding"
MODEL_ID = "dlib-resnet-v1"
Array = npt.NDArray[np.float32]
METHOD = {
    "before": "the full reload every change cost before the change log (commit fffe6ce): "
    "the same code over a store whose changes_since returns None",
    "after": "the index applies Store.changes_since",
    "upkeep_ms": "SearchIndexes.get right after an enrolment (its template insert), median",
    "identify_after_change_ms": "Gallery.identify right after an enrolment, median",
    "identify_warm_ms": "Gallery.identify with nothing changed, median",
    "first_load_s": "reading, decrypting and indexing the whole gallery once (incl. training "
    "the quantized index)",
}


def lfw_every_photo(lfw: Path, workers: int = 2) -> dict[str, npt.NDArray[Any]]:
    """The template of the largest face of every LFW photo (cached), with identity labels."""
    if CACHE.exists():
        return dict(np.load(CACHE, allow_pickle=False))
    root = lfw / "lfw-deepfunneled"
    if not root.is_dir():
        sys.exit(f"LFW not found at {root}; pass --lfw PATH (see its SOURCE.md).")
    photos = sorted(root.glob("*/*.jpg"))
    vectors, names = [], []
    start = time.perf_counter()
    for result in facetrust.embed_many(photos, workers=workers, progress=True):
        if result.faces:
            vectors.append(result.faces[0].embedding.vector)
            names.append(Path(result.source).parent.name)
    print(f"embedded {len(vectors)}/{len(photos)} photos in {time.perf_counter() - start:.0f} s")
    identities = sorted(set(names))
    number = {name: i for i, name in enumerate(identities)}
    data = {
        "vectors": np.asarray(vectors, dtype=np.float32),
        "labels": np.asarray([number[n] for n in names], dtype=np.int64),
    }
    CACHE.parent.mkdir(exist_ok=True)
    tmp = CACHE.with_suffix(".tmp.npz")
    np.savez(tmp, **data)  # type: ignore[arg-type]
    tmp.replace(CACHE)
    return data


class FullReloadStore:
    """A store whose change log is never available: the index reloads in full on each change.

    Everything else is the wrapped store's (the "before" of this benchmark).
    """

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner

    def changes_since(self, generation: int) -> StoreChanges | None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def build_gallery(folder: Path, key: crypto.MasterKey, vectors: Array, now: datetime) -> float:
    """A real gallery of one subject per vector (bulk path through the store API); seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    config = GalleryConfig.in_folder(folder, key_file=None)
    start = time.perf_counter()
    with Gallery.create(config, key, now=lambda: now) as gallery:
        secret = gallery.parts.keyring.template_secret()
        protected = crypto.protect(vectors, secret)
        store, keystore = gallery.store, gallery.keystore
        stamp, expires = now.isoformat(), (now + timedelta(days=365)).isoformat()
        for offset in range(0, len(vectors), 50_000):
            with store.transaction(), keystore.transaction():
                for i in range(offset, min(offset + 50_000, len(vectors))):
                    subject_id = f"s{i:07d}"
                    data_key = crypto.generate_key()
                    keystore.put_key(subject_id, key.wrap(data_key, data_key_label(subject_id)))
                    store.insert_subject(SubjectRecord(subject_id, None, stamp, stamp))
                    store.insert_consent(
                        ConsentRecord(
                            f"c{i:07d}", subject_id, (PURPOSE,), stamp, expires, "bulk",
                            "ab" * 32, "bench-v1",
                        )
                    )
                    template = TemplateRecord(uuid.uuid4().hex, subject_id, MODEL_ID, b"", stamp)
                    sealed = crypto.seal(
                        data_key, protected[i].tobytes(), template_label(template)
                    )
                    store.insert_template(
                        TemplateRecord(template.template_id, subject_id, MODEL_ID, sealed, stamp)
                    )
                store.bump_generation()
            print(f"  built {min(offset + 50_000, len(vectors)):,} subjects", flush=True)
    return time.perf_counter() - start


def enrol_one(gallery: Gallery, vector: Array) -> None:
    """Add a subject, grant consent and enrol one template (three transactions)."""
    subject_id = f"new-{uuid.uuid4().hex[:12]}"
    gallery.add_subject(subject_id, actor="registrar")
    gallery.grant_consent(
        subject_id, [PURPOSE], expires_at=gallery.now() + timedelta(days=365),
        evidence_ref="form", evidence_sha256="ab" * 32, notice_version="bench-v1",
        actor="registrar",
    )
    gallery.enroll(subject_id, [Embedding(vector, MODEL_ID)], actor="registrar")


def measure(
    gallery: Gallery, probes: Array, newcomers: Array, rounds: int
) -> dict[str, Any]:
    """Upkeep per change and identify latency, warm and right after a change (ms, medians)."""
    indexes = gallery.parts.indexes

    def identify(probe: Array) -> float:
        start = time.perf_counter()
        gallery.identify(Embedding(probe, MODEL_ID), purpose=PURPOSE, actor="officer",
            case_ref="CASE-1")
        return (time.perf_counter() - start) * 1000

    start = time.perf_counter()
    indexes.get(MODEL_ID)
    load_s = time.perf_counter() - start
    for probe in probes[:3]:
        identify(probe)  # warm up
    upkeep, after_change, warm = [], [], []
    for r in range(rounds):
        enrol_one(gallery, newcomers[2 * r])
        start = time.perf_counter()
        indexes.get(MODEL_ID)
        upkeep.append((time.perf_counter() - start) * 1000)
        warm += [identify(p) for p in probes[3 * r : 3 * r + 3]]
        enrol_one(gallery, newcomers[2 * r + 1])
        after_change.append(identify(probes[r]))
    return {
        "first_load_s": round(load_s, 2),
        "upkeep_ms": round(statistics.median(upkeep), 2),
        "upkeep_ms_all": [round(u, 2) for u in upkeep],
        "identify_warm_ms": round(statistics.median(warm), 2),
        "identify_after_change_ms": round(statistics.median(after_change), 2),
        "identify_after_change_ms_all": [round(u, 2) for u in after_change],
        "index_kind": indexes.info()[MODEL_ID]["kind"],
    }


def bench_size(
    label: str, vectors: Array, model: TemplateModel, rounds: int, work: Path
) -> dict[str, Any]:
    print(f"\n== {label}: {len(vectors):,} templates ==", flush=True)
    key = crypto.MasterKey(crypto.generate_key(), "bench")
    now = datetime.now(UTC)
    folder = work / label
    build_s = build_gallery(folder, key, vectors, now)
    print(f"  built in {build_s:.0f} s", flush=True)
    rng = np.random.default_rng(len(vectors))
    probes = vectors[rng.choice(len(vectors), 3 * rounds + 3, replace=False)]
    newcomers = model.sample_templates(model.sample_centres(4 * rounds, rng), rng)
    config = GalleryConfig.in_folder(folder, key_file=None)
    row: dict[str, Any] = {"label": label, "templates": len(vectors), "build_s": round(build_s)}
    with Gallery.open(config, master_key=key) as gallery:
        row["after"] = measure(gallery, probes, newcomers[: 2 * rounds], rounds)
    print(f"  after:  {row['after']}", flush=True)
    store = FullReloadStore(SqliteStore(config.db_path))
    keystore = SqliteKeyStore(config.keystore_path)
    with Gallery.open(config, master_key=key, store=store, keystore=keystore) as gallery:  # type: ignore[arg-type]
        row["before"] = measure(gallery, probes, newcomers[2 * rounds :], rounds)
    print(f"  before: {row['before']}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--sizes", default="real,100000,1000000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--embed-only", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/gallery_upkeep.json")
    args = parser.parse_args()
    data = lfw_every_photo(args.lfw, args.workers)
    if args.embed_only:
        return
    real, labels = data["vectors"], data["labels"]
    model = TemplateModel.fit(real, labels)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facetrust-upkeep-") as work:
        for size in args.sizes.split(","):
            if size == "real":
                rows.append(bench_size(f"lfw-{len(real)}", real, model, args.rounds, Path(work)))
            else:
                rng = np.random.default_rng(int(size))
                vectors = model.sample_templates(model.sample_centres(int(size), rng), rng)
                label = f"synthetic-{size}"
                rows.append(bench_size(label, vectors, model, args.rounds, Path(work)))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result = {"machine": machine(), "method": METHOD, "sizes": rows}
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| gallery | templates | upkeep per change ms (before / after / ratio) "
        "| identify warm ms (before / after) | identify after a change ms "
        "(before / after / ratio) | first load s |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        b, a = row["before"], row["after"]
        print(
            f"| {row['label']} | {row['templates']:,} | {b['upkeep_ms']} / {a['upkeep_ms']} / "
            f"{b['upkeep_ms'] / max(a['upkeep_ms'], 1e-9):.0f}x | {b['identify_warm_ms']} / "
            f"{a['identify_warm_ms']} | {b['identify_after_change_ms']} / "
            f"{a['identify_after_change_ms']} / "
            f"{b['identify_after_change_ms'] / max(a['identify_after_change_ms'], 1e-9):.0f}x "
            f"| {a['first_load_s']} |"
        )


if __name__ == "__main__":
    main()
