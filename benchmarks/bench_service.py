"""Load benchmark of the REST service: concurrent identifications over loopback.

Builds a gallery of the shipped sample identities plus more LFW identities,
starts a real ``facetrust serve`` on 127.0.0.1, and fires identification
requests from N concurrent clients for a bounded count and time. Reports
throughput, p50/p99 latency, errors (must be 0) and the audit events counted
after the run (must equal the successful requests). The reference beside it,
from the same run, is the same identifications called in-process on the
library (``Gallery.identify``): the difference is the cost of HTTP, auth,
multipart, limits and the lock.

Usage::

    .venv/bin/python benchmarks/bench_service.py [--lfw ../shared/datasets/lfw]
        [--identities 100] [--clients 4] [--requests 200] [--max-seconds 120]
        [--out benchmarks/results/service.json]

Without the LFW folder only the sample identities are enrolled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from facetrust.errors import FacetrustError
from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, SqliteApiKeyStore

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "lfw"
PURPOSE = "access-control"


def people(lfw: Path | None, extra: int) -> list[tuple[str, list[Path]]]:
    """(identity, photos) with at least two photos: the first is enrolled, the rest probe."""
    chosen = [(d.name, sorted(d.glob("*.jpg"))) for d in sorted(SAMPLE.iterdir()) if d.is_dir()]
    names = {n for n, _ in chosen}
    folder = lfw / "lfw-deepfunneled" if lfw else None
    if folder and folder.is_dir() and extra:
        for d in sorted(folder.iterdir()):
            if len(chosen) >= len(names) + extra:
                break
            photos = sorted(d.glob("*.jpg"))
            if d.name not in names and len(photos) >= 2:
                chosen.append((d.name, photos[:4]))
    return chosen


def enrol_first_photos(
    gallery: Gallery, chosen: Iterable[tuple[str, list[Path]]]
) -> dict[Path, str]:
    """Consent and enrol the first photo of each identity; returns probe photo -> identity.

    An identity whose first photo cannot be enrolled is left out, with its probes.
    """
    truth: dict[Path, str] = {}
    expires = datetime.now(UTC) + timedelta(days=30)
    for name, photos in chosen:
        gallery.add_subject(name, actor="bench")
        gallery.grant_consent(
            name, [PURPOSE], expires_at=expires, evidence_ref=f"bench-{name}",
            evidence_sha256="0" * 64, notice_version="bench", actor="bench",
        )
        try:
            gallery.enroll(name, [photos[0]], actor="bench")
        except FacetrustError:
            continue
        truth.update((probe, name) for probe in photos[1:])
    return truth


def build_gallery(folder: Path, chosen: list[tuple[str, list[Path]]]) -> list[Path]:
    """Enrol the first photo of each identity; return the probe photos."""
    gallery, _ = Gallery.init_folder(folder)
    with gallery:
        return list(enrol_first_photos(gallery, chosen))


def in_process_reference(folder: Path, probes: list[Path], count: int) -> dict[str, Any]:
    """The same identifications called on the library in this process (one at a time)."""
    latencies = []
    with Gallery.find(folder) as gallery:
        gallery.identify(probes[0].read_bytes(), purpose=PURPOSE, actor="bench", case_ref="warm")
        start = time.perf_counter()
        for i in range(count):
            data = probes[i % len(probes)].read_bytes()
            t0 = time.perf_counter()
            with contextlib.suppress(FacetrustError):
                gallery.identify(data, purpose=PURPOSE, actor="bench-ref", case_ref=f"ref-{i}")
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
    return summary(latencies, elapsed, errors=0)


def summary(latencies: list[float], elapsed: float, errors: int) -> dict[str, Any]:
    values = np.array(latencies) * 1000.0
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 3),
        "throughput_per_s": round(len(latencies) / elapsed, 2) if elapsed else 0.0,
        "p50_ms": round(float(np.percentile(values, 50)), 1) if len(values) else None,
        "p99_ms": round(float(np.percentile(values, 99)), 1) if len(values) else None,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def fire(
    url: str, key: str, probes: list[Path], clients: int, total: int, max_seconds: float
) -> tuple[list[float], dict[int, int], float, int]:
    """``clients`` concurrent loops sending identifications until ``total`` or ``max_seconds``."""
    payloads = [(p.name, p.read_bytes()) for p in probes]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sent = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < total and time.perf_counter() < deadline:
            index = sent
            sent += 1
            name, data = payloads[index % len(payloads)]
            t0 = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/identify", files={"image": (name, data, "image/jpeg")},
                    data={"purpose": PURPOSE, "case_ref": f"bench-{index}"},
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as c:
        await asyncio.gather(*(client_loop(c) for _ in range(clients)))
    return latencies, statuses, time.perf_counter() - start, sent


def count_events(url: str, key: str, kind: str, actor: str) -> int:
    count, offset = 0, 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        while offset is not None:
            page = client.get("/v1/audit/events", params={
                "kind": kind, "actor": actor, "offset": offset, "limit": 1000}).json()
            count += len(page["events"])
            offset = page["next_offset"]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--identities", type=int, default=100, help="LFW identities to add")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--reference-requests", type=int, default=50)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "service.json"
    )
    args = parser.parse_args()
    lfw = args.lfw if args.lfw.is_dir() else None
    if lfw is None:
        print(f"note: {args.lfw} not found; using only the {len(list(SAMPLE.iterdir()))} "
              "sample identities")

    with tempfile.TemporaryDirectory(prefix="facetrust-bench-") as tmp:
        folder = Path(tmp)
        chosen = people(lfw, args.identities)
        t0 = time.perf_counter()
        probes = build_gallery(folder, chosen)
        print(f"gallery: {len(chosen)} identities enrolled in {time.perf_counter() - t0:.1f} s, "
              f"{len(probes)} probe photos")
        reference = in_process_reference(folder, probes, args.reference_requests)

        with Gallery.find(folder) as gallery:
            keys = ApiKeys.for_gallery(gallery, SqliteApiKeyStore(folder / "api-keys.db"))
        operator = keys.create("operator", "bench operator", created_by="bench")
        auditor = keys.create("auditor", "bench auditor", created_by="bench")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "FACETRUST_SERVICE_IDENTIFY_PER_MINUTE": "1000000",
               "FACETRUST_SERVICE_IDENTIFY_BURST": str(args.requests + 10)}
        log = (folder / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-c", "from facetrust.cli.main import cli; cli()", "serve",
             "--gallery", str(folder), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit((folder / "server.log").read_text())
                time.sleep(0.2)
            # One untimed request first: the server builds its search index on first use.
            warm = httpx.post(
                f"{url}/v1/identify", headers={"Authorization": f"Bearer {operator.key}"},
                files={"image": (probes[0].name, probes[0].read_bytes(), "image/jpeg")},
                data={"purpose": PURPOSE, "case_ref": "warm-up"}, timeout=120,
            ).status_code
            latencies, statuses, elapsed, sent = asyncio.run(
                fire(url, operator.key, probes, args.clients, args.requests, args.max_seconds)
            )
            # One client at a time: the per-request cost of the service over the library.
            serial_latencies, serial_statuses, serial_elapsed, _ = asyncio.run(
                fire(url, operator.key, probes, 1, args.reference_requests, args.max_seconds)
            )
            latencies_serial = serial_latencies
            actor = operator.record.actor
            identified = count_events(url, auditor.key, "identify", actor)
            # one event per refused request: the gallery's, or the service's before it
            refused = sum(count_events(url, auditor.key, kind, actor)
                          for kind in ("identify.refused", "service.refused"))
            chain_ok = httpx.get(f"{url}/v1/audit/verify", timeout=120,
                                 headers={"Authorization": f"Bearer {auditor.key}"}).json()["ok"]
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)
            log.close()

    concurrent_errors = sum(n for st, n in statuses.items() if st not in (200, 422))
    for status, n in serial_statuses.items():
        statuses[status] = statuses.get(status, 0) + n
    ok = statuses.get(200, 0)
    warm_ok = 1 if warm == 200 else 0
    errors = sum(n for st, n in statuses.items() if st not in (200, 422))
    service = summary(latencies, elapsed, concurrent_errors)
    serial_errors = sum(n for st, n in serial_statuses.items() if st not in (200, 422))
    serial = summary(latencies_serial, serial_elapsed, serial_errors)
    results: dict[str, Any] = {
        "gallery_identities": len(chosen),
        "clients": args.clients,
        "requests_sent": sent + len(latencies_serial),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "service": service,
        "service_one_client": serial,
        "in_process_reference": reference,
        "audit": {
            "identify_events": identified,
            "refused_events": refused,
            "successful_requests": ok,
            "warm_up_requests": 1,
            "refused_requests": statuses.get(422, 0),
            "lost_events": (ok + warm_ok - identified)
            + (statuses.get(422, 0) + 1 - warm_ok - refused),
            "chain_ok": chain_ok,
        },
        "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "note": "shared 2-core machine; absolute numbers are under contention, "
                "compare the two rows of the same run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")
    if errors or results["audit"]["lost_events"] or not chain_ok:
        raise SystemExit("FAILED: errors or lost audit events")


def print_table(results: dict[str, Any]) -> None:
    s, r, a = results["service"], results["in_process_reference"], results["audit"]
    one = results["service_one_client"]
    print(f"\nIdentification, gallery of {results['gallery_identities']} identities, "
          f"{results['clients']} concurrent clients (loopback):")
    print(f"{'':34} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    rows = ((f"facetrust serve, {results['clients']} clients", s),
            ("facetrust serve, 1 client", one),
            ("Gallery.identify in-process (ref)", r))
    for label, row in rows:
        print(f"{label:34} {row['requests']:>9} {row['throughput_per_s']:>8} "
              f"{row['p50_ms']:>8} {row['p99_ms']:>8} {row['errors']:>7}")
    print(f"status codes: {results['status_counts']}")
    print(f"audit: {a['identify_events']} identify events for {a['successful_requests']} "
          f"successful requests (+1 warm-up), {a['refused_events']} refusals for "
          f"{a['refused_requests']} refused requests; lost events: {a['lost_events']}; "
          f"chain ok: {a['chain_ok']}")


if __name__ == "__main__":
    main()
