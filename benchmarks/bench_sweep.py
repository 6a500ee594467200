"""The retention sweep on a large gallery: what an hourly timer costs.

``facetrust retention sweep`` (``deploy/systemd/facetrust-retention.timer``
runs it hourly) checks every subject: past retention? any consent still
active? biometric data or a data key left? This measures one sweep of a
synthetic gallery of N subjects (the galleries of ``bench_cold_start.py``: one
template, one data key and one active consent per subject, so the sweep erases
nothing and every run checks the same gallery) on SQLite and PostgreSQL, in a
fresh child process: wall seconds and CPU seconds of the sweeping process.

``--compare-src DIR`` also runs the sweep with the facetrust package in DIR
(e.g. ``git archive <commit> src | tar -x -C /tmp/old``: the code before the
sweep read its subjects a page at a time with set queries, which asked the
store a few questions per subject), in the same run, and prints the ratio.

Usage::

    nice -n 10 python benchmarks/bench_sweep.py [--sizes 100000,1000000]
        [--backends sqlite,postgres] [--compare-src DIR]
        [--out benchmarks/results/sweep.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold_start import build, config_of  # noqa: E402
from timing import machine  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def child(backend: str, size: int) -> None:
    """One sweep, measured in this (fresh) process; prints one JSON line."""
    from facetrust.gallery import Gallery

    with Gallery.open(config_of(backend, size)) as gallery:
        cpu, wall = time.process_time(), time.perf_counter()
        result = gallery.sweep_retention(actor="bench")
        print(json.dumps({
            "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
            "erased": len(result.erased),
        }))


def sweep(backend: str, size: int, src: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run(
        [sys.executable, __file__, "--child", backend, str(size)],
        check=True, capture_output=True, text=True, env=env,
    ).stdout.strip().splitlines()[-1]
    return dict(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--compare-src", type=Path, metavar="DIR",
                        help="also sweep with the facetrust package in DIR, as the reference")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "SIZE"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/sweep.json")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    rows = []
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            if build(backend, size):
                print(f"  built {backend} {size:,}", flush=True)
            row: dict[str, Any] = {"backend": backend, "subjects": size,
                                   "sweep": sweep(backend, size, None)}
            if args.compare_src is not None:
                row["compared"] = sweep(backend, size, args.compare_src)
                row["cpu_ratio"] = round(row["compared"]["cpu_s"] / row["sweep"]["cpu_s"], 1)
                row["wall_ratio"] = round(row["compared"]["wall_s"] / row["sweep"]["wall_s"], 1)
            print(f"  {row}", flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
