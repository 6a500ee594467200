"""Authentication under attack: a valid ``GET /v1/me`` while 40 clients send invalid keys.

Starts a real ``facetrust serve`` on 127.0.0.1 with its default settings and
measures the latency of a valid key's ``GET /v1/me`` (one keep-alive client,
sequential requests) in one run, alone (the reference) and while a separate
attacker process runs 40 concurrent clients that send invalid keys as fast as
the server answers them: a third malformed, a third with unknown key ids, a
third with a real key id and a wrong secret (the only kind that can reach
argon2). The two phases alternate in blocks (the attacker is paused with
SIGSTOP for the reference blocks), so both see the same background load of
the machine. Every loop is bounded by a request count and a deadline.

Prints p50/p99 of both phases and their ratio (target: p99 under attack within
2x of the reference), and what the attackers got back (401, 429, ...).

Usage::

    .venv/bin/python benchmarks/bench_auth_attack.py [--requests 400] [--clients 40]
        [--max-seconds 60] [--out benchmarks/results/auth_attack.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from facetrust.gallery import Gallery
from facetrust.service import ApiKeys, SqliteApiKeyStore, auth

#: How long the server may hold a throttled request (0.5 s when run against older code).
THROTTLED_DELAY_S = getattr(auth, "THROTTLED_DELAY_S", 0.5)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import percentiles  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def invalid_keys(victim_id: str) -> list[str]:
    """One of each kind of invalid key, cycled by the attackers."""
    return [
        "not-a-key-" + secrets.token_hex(8),
        f"ft_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}",
        f"ft_{victim_id}_{secrets.token_urlsafe(32)}",
    ]


async def attack(url: str, victim_id: str, clients: int, per_client: int, seconds: float) -> None:
    """The attacker process: ``clients`` concurrent loops of invalid keys; prints statuses."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    stop = asyncio.Event()  # SIGTERM: finish the requests in flight, then report
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def one(client: httpx.AsyncClient, n: int) -> None:
        for i in range(per_client):
            if i == 10 and n == 0:
                print("attacking", flush=True)  # every client is past its first requests
            if time.monotonic() > deadline or stop.is_set():
                return
            key = invalid_keys(victim_id)[(n + i) % 3]
            try:
                response = await client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
                statuses[response.status_code] += 1
            except httpx.HTTPError:
                statuses[0] += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        await asyncio.gather(*(one(client, n) for n in range(clients)))
    print(json.dumps({str(k): v for k, v in sorted(statuses.items())}), flush=True)


def measure(url: str, key: str, requests: int, seconds: float) -> list[float]:
    """Latencies (s) of sequential valid ``GET /v1/me`` on one keep-alive connection."""
    out: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=60) as client:
        for _ in range(20):  # warm the connection and the server's code paths
            client.get("/v1/me").raise_for_status()
        for _ in range(requests):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter()
            response = client.get("/v1/me")
            out.append(time.perf_counter() - start)
            response.raise_for_status()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="Valid requests per phase.")
    parser.add_argument("--clients", type=int, default=40, help="Concurrent attackers.")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="Bound of each phase.")
    parser.add_argument("--blocks", type=int, default=10, help="Alternations of the phases.")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--attacker", nargs=2, metavar=("URL", "VICTIM_ID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attacker:
        asyncio.run(attack(args.attacker[0], args.attacker[1], args.clients,
                           per_client=100_000, seconds=args.max_seconds))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gallery, _ = Gallery.init_folder(folder)
        store = SqliteApiKeyStore(folder / "api-keys.db")
        keys = ApiKeys.for_gallery(gallery, store)
        gallery.close()
        valid = keys.create("operator", "bench valid", created_by="bench").key
        victim = keys.create("operator", "bench victim", created_by="bench").record.key_id
        store.close()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (folder / "server.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-c", "from facetrust.cli.main import cli; cli()", "serve",
             "--gallery", str(folder), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start: " + (folder / "server.log")
                                     .read_text()[-2000:])
                time.sleep(0.2)
            measure(url, valid, 1, args.max_seconds)  # the client is logged in before the attack
            attacker = subprocess.Popen(
                [sys.executable, __file__, "--clients", str(args.clients),
                 "--max-seconds", str(args.max_seconds * 3), "--attacker", url, victim],
                stdout=subprocess.PIPE, env=os.environ.copy(),
            )
            assert attacker.stdout is not None
            attacker.stdout.readline()  # "attacking": the 40 clients are connected and sending
            alone: list[float] = []
            attacked: list[float] = []
            block = max(1, args.requests // args.blocks)
            for _ in range(args.blocks):
                attacker.send_signal(signal.SIGSTOP)
                time.sleep(THROTTLED_DELAY_S + 0.2)  # requests in flight are answered
                alone += measure(url, valid, block, args.max_seconds / args.blocks)
                attacker.send_signal(signal.SIGCONT)
                time.sleep(THROTTLED_DELAY_S + 0.2)  # every attacker is sending again
                attacked += measure(url, valid, block, args.max_seconds / args.blocks)
            attacker.send_signal(signal.SIGTERM)
            attacker_out, _ = attacker.communicate(timeout=30)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    base, under = percentiles(alone), percentiles(attacked)
    result: dict[str, Any] = {
        "clients": args.clients,
        "requests_per_phase": [len(alone), len(attacked)],
        "reference_without_attack": base,
        "under_attack": under,
        "p99_ratio": round(under["p99_ms"] / base["p99_ms"], 2),
        "attacker_statuses": attacker_out.decode().strip() or "(stopped before reporting)",
    }
    print(f"valid GET /v1/me, {len(alone)} requests alone and {len(attacked)} under attack "
          f"by {args.clients} clients sending invalid keys")
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'reference (no attack)':24}{base['p50_ms']:>10.2f}{base['p99_ms']:>10.2f}")
    print(f"{'under attack':24}{under['p50_ms']:>10.2f}{under['p99_ms']:>10.2f}")
    print(f"p99 ratio: {result['p99_ratio']}x (target <= 2x)")
    print(f"attackers got: {result['attacker_statuses']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
