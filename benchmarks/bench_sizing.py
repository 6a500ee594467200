"""Memory a replica needs per template: resident memory of an opened gallery's search index.

Builds a gallery of N synthetic templates (one subject each, with consent,
data key and sealed template, through the store API as
``bench_gallery_upkeep.py`` does), then, in a fresh process, opens it and loads
the search index (what a replica does before its first identify), and reports
the resident memory added by the index and the peak during the load. The
reference beside it is the raw size of the vectors themselves (N x 128 x 4
bytes of float32): the ratio is the overhead of ids, per-subject eligibility
and the quantized codes. docs/deployment.md turns the numbers into templates
per GB.

Usage::

    python benchmarks/bench_sizing.py [--sizes 20000,100000]
        [--out benchmarks/results/sizing.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL_ID = "dlib-resnet-v1"


def rss_bytes() -> int:
    """This process's resident memory now (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load(folder: Path) -> dict[str, Any]:
    """Open the gallery in ``folder`` and load its index; memory and seconds (child process)."""
    from facetrust.gallery import Gallery, GalleryConfig
    from facetrust.gallery.config import CONFIG_NAME

    before = rss_bytes()
    gallery = Gallery.open(GalleryConfig.load(folder / CONFIG_NAME))
    opened = rss_bytes()
    start = time.perf_counter()
    info = gallery.index_info()
    seconds = time.perf_counter() - start
    loaded = rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gallery.close()
    return {"rss_before_open": before, "rss_opened": opened, "rss_loaded": loaded,
            "peak_rss": peak, "load_seconds": round(seconds, 2), "index": info}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sizing.json")
    parser.add_argument("--load", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.load is not None:
        print(json.dumps(load(args.load), default=str))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gallery_upkeep import build_gallery
    from facetrust import crypto
    from facetrust.gallery import GalleryConfig
    from facetrust.gallery.config import CONFIG_NAME

    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory(prefix="facetrust-sizing-") as tmp:
            folder = Path(tmp) / "gallery"
            rng = np.random.default_rng(size)
            vectors = rng.normal(0, 0.09, (size, 128)).astype(np.float32)
            material = crypto.generate_key()
            key_file = crypto.write_key_file(Path(tmp) / "gallery.key", material)
            key = crypto.MasterKey(material, str(key_file))
            build_seconds = build_gallery(folder, key, vectors, datetime.now(UTC))
            GalleryConfig.in_folder(folder, key_file=key_file).save(folder / CONFIG_NAME)
            child = subprocess.run(
                [sys.executable, __file__, "--load", str(folder)],
                capture_output=True, text=True, check=True,
            )
            found = json.loads(child.stdout.strip().splitlines()[-1])
        added = found["rss_loaded"] - found["rss_opened"]
        raw = size * 128 * 4
        rows.append({
            "templates": size, "build_seconds": round(build_seconds, 1),
            "load_seconds": found["load_seconds"],
            "index_rss_mib": round(added / 2**20, 1),
            "peak_rss_mib": round(found["peak_rss"] / 2**20, 1),
            "bytes_per_template": round(added / size),
            "raw_vector_bytes": 512,
            "ratio_to_raw": round(added / raw, 2),
            "index_kind": next(iter(found["index"].values()))["kind"],
        })
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "cpu_count": os.cpu_count()}, indent=2) + "\n")
    print(f"\n{'templates':>10} {'kind':>10} {'index MiB':>10} {'B/template':>11} "
          f"{'x raw 512 B':>11} {'peak MiB':>9} {'load s':>7}")
    for r in rows:
        print(f"{r['templates']:>10,} {r['index_kind']:>10} {r['index_rss_mib']:>10} "
              f"{r['bytes_per_template']:>11} {r['ratio_to_raw']:>11} {r['peak_rss_mib']:>9} "
              f"{r['load_seconds']:>7}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
