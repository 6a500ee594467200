"""Identification at scale: exact vs approximate indexes on synthetic templates fitted to real ones.

Galleries of 100k and 1M templates (one per identity) are drawn from a
:class:`facetrust.index.synthetic.TemplateModel` fitted to real dlib templates of
LFW (``benchmarks/lfw_templates.py`` computes and caches them). Queries are
*mated*: a fresh template of an enrolled identity. For each size it reports,
from the same run:

* build time and memory per template of each index;
* single-query and batch-of-100 latency p50/p99 (ms) with k=10;
* recall@1 and recall@10 of each approximate index against exact search, at
  several settings of its knob (``rerank`` for the quantized scan, ``ef`` for
  HNSW), and the rank-1 identification rate;
* filtered search with the default index (10% and 50% of the gallery allowed;
  1% goes exact by design): latency, recall against exact filtered search, and
  a check that no disallowed id came back;
* save + load time of the index (restart cost) and the cost of an erasure;
* the references: plain numpy (``norms - 2 G @ q``, argpartition) and
  ``face_recognition.face_distance`` + argsort (fewer queries at 1M: ~0.3 s each).

The HNSW graph is built only up to ``--hnsw-max-size`` (100k by default: at 1M
it takes over 30 minutes on 2 cores; its 1M numbers are in
``benchmarks/results/index_1m.json``). A switch-over sweep (small sizes)
measures where exact search stops winning.

Usage::

    python benchmarks/bench_index.py [--sizes 100000,1000000] [--queries 500]
        [--methods quantized,hnsw] [--hnsw-max-size 100000]
        [--lfw ../shared/datasets/lfw] [--out benchmarks/results/index.json]

Latency percentiles need a quiet machine: run it alone, not niced.

Needs ``pip install -e '.[bench]'`` and ``pip install --no-deps face_recognition``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psutil

import facetrust
from facetrust.index import ExactIndex, HnswIndex, QuantizedIndex, load_index
from facetrust.index.synthetic import TemplateModel, distance_report
from facetrust.models.dlib_backend import DLIB_RESNET_MODEL_ID as MODEL_ID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lfw_templates import CACHE, load_templates  # noqa: E402
from timing import percentiles  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
K = 10
EFS = (64, 128, 256, 512)
DEFAULT_EF = 128
RERANKS = (10, 20, 30, 50, 100)
DEFAULT_RERANK = 30
#: The finer quantizer: 64 codes per template, fewer candidates needed.
FINE_RERANKS = (10, 20)
FINE_RERANK = 10
Array = npt.NDArray[np.float32]



def time_single(
    search: Callable[[Array], Any], queries: Array
) -> tuple[dict[str, float], list[Any]]:
    times, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(search(query))
        times.append(time.perf_counter() - start)
    return percentiles(times), results


def time_batches(
    search: Callable[[Array], Any], queries: Array, batch: int
) -> tuple[dict[str, float], list[Any]]:
    times, results = [], []
    for start in range(0, len(queries) - batch + 1, batch):
        chunk = queries[start : start + batch]
        begin = time.perf_counter()
        results.append(search(chunk))
        times.append(time.perf_counter() - begin)
    return percentiles(times), results


def recalls(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> dict[str, float]:
    at_10 = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)])
    return {
        "recall_at_1": round(float(np.mean(found[:, 0] == truth[:, 0])), 4),
        "recall_at_10": round(float(at_10), 4),
    }


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


def bench_size(
    model: TemplateModel,
    size: int,
    n_queries: int,
    fr_queries: int,
    batch: int,
    methods: list[str],
    hnsw_max_size: int,
) -> dict[str, Any]:
    rng = np.random.default_rng(size)
    centres = model.sample_centres(size, rng)
    gallery = model.sample_templates(centres, rng)
    who = rng.choice(size, n_queries, replace=False)
    queries = model.sample_templates(centres[who], rng)
    del centres
    ids = np.arange(size, dtype=np.int64)
    row: dict[str, Any] = {"size": size, "queries": n_queries}
    print(f"\n== {size:,} templates ==", flush=True)

    # Exact index: the ground truth and the default below the threshold.
    before = rss()
    start = time.perf_counter()
    exact = ExactIndex(128, MODEL_ID)
    exact.add(ids, gallery)
    exact_build = time.perf_counter() - start
    single, found = time_single(lambda q: exact.search(q, K)[1][0], queries)
    batched, _ = time_batches(lambda q: exact.search(q, K)[1], queries, batch)
    truth = np.asarray(found)
    row["exact"] = {
        "build_s": round(exact_build, 2),
        "bytes_per_template": round(exact.memory_bytes() / size, 1),
        "rss_bytes_per_template": round((rss() - before) / size, 1),
        "single": single,
        f"batch_{batch}": batched,
        "identification_rate": round(float(np.mean(truth[:, 0] == who)), 4),
    }
    print("exact", json.dumps(row["exact"]), flush=True)

    # References from the same run.
    norms = np.einsum("ij,ij->i", gallery, gallery)

    def numpy_search(q: Array) -> npt.NDArray[np.int64]:
        d = norms - 2.0 * (gallery @ q)
        top = np.argpartition(d, K)[:K]
        return top[np.argsort(d[top])]

    row["numpy_reference"] = {"single": time_single(numpy_search, queries)[0]}
    try:
        import face_recognition

        n_fr = min(fr_queries, n_queries)

        def fr_search(q: Array) -> npt.NDArray[np.int64]:
            return np.argsort(face_recognition.face_distance(gallery, q))[:K]

        fr_single, fr_found = time_single(fr_search, queries[:n_fr])
        row["face_recognition_reference"] = {
            "single": fr_single,
            "queries": n_fr,
            "agrees_with_exact_at_1": float(np.mean(np.asarray(fr_found)[:, 0] == truth[:n_fr, 0])),
        }
    except ImportError:
        row["face_recognition_reference"] = None
    print(
        "references",
        json.dumps(row["numpy_reference"]),
        json.dumps(row["face_recognition_reference"]),
        flush=True,
    )

    # Approximate indexes: the shipped default (quantized scan) and, where its
    # build time allows, the HNSW graph.
    for method in methods:
        if method == "hnsw" and size > hnsw_max_size:
            row["hnsw"] = {"skipped": f"HNSW is built only up to {hnsw_max_size:,} templates"}
            continue
        row[method] = bench_approximate(method, ids, gallery, queries, who, truth, batch)
    filtered_method = methods[0]
    row[filtered_method]["filtered"] = bench_filtered(
        row[filtered_method].pop("_index"), exact, ids, queries, rng
    )
    for method in methods[1:]:
        row.get(method, {}).pop("_index", None)
    return row


#: The knob each approximate index is measured at: (parameter, values, default).
KNOBS: dict[str, tuple[str, tuple[int, ...], int]] = {
    "quantized": ("rerank", RERANKS, DEFAULT_RERANK),
    "quantized-no-rotation": ("rerank", RERANKS, DEFAULT_RERANK),
    "quantized-64": ("rerank", FINE_RERANKS, FINE_RERANK),
    "hnsw": ("expansion_search", EFS, DEFAULT_EF),
}


def make_index(method: str) -> QuantizedIndex | HnswIndex:
    if method == "quantized":
        return QuantizedIndex(128, MODEL_ID, rerank=DEFAULT_RERANK)
    if method == "quantized-no-rotation":
        return QuantizedIndex(128, MODEL_ID, rotate=False, rerank=DEFAULT_RERANK)
    if method == "quantized-64":
        return QuantizedIndex(128, MODEL_ID, subquantizers=64, rerank=FINE_RERANK)
    return HnswIndex(128, MODEL_ID, expansion_search=DEFAULT_EF)


def bench_approximate(
    method: str,
    ids: npt.NDArray[np.int64],
    gallery: Array,
    queries: Array,
    who: npt.NDArray[np.int64],
    truth: npt.NDArray[np.int64],
    batch: int,
) -> dict[str, Any]:
    """Build, then latency and recall against exact search at each knob value; save/load."""
    gc.collect()
    before = rss()
    start = time.perf_counter()
    index = make_index(method)
    index.add(ids, gallery)
    build = time.perf_counter() - start
    knob, values, default = KNOBS[method]
    out: dict[str, Any] = {
        "build_s": round(build, 1),
        "bytes_per_template": round(index.memory_bytes() / len(ids), 1),
        "rss_bytes_per_template": round((rss() - before) / len(ids), 1),
        "params": dict(index.params),
        "knob": knob,
        "by_knob": {},
    }
    print(f"{method} built in {build:.1f} s", flush=True)
    for value in values:
        set_knob(index, knob, value)
        single, found = time_single(lambda q: index.search(q, K)[1][0], queries)
        batched, _ = time_batches(lambda q: index.search(q, K)[1], queries, batch)
        found_array = np.asarray(found)
        out["by_knob"][value] = {
            "single": single,
            f"batch_{batch}": batched,
            **recalls(found_array, truth),
            "identification_rate": round(float(np.mean(found_array[:, 0] == who)), 4),
        }
        print(f"{method} {knob}={value}", json.dumps(out["by_knob"][value]), flush=True)
    set_knob(index, knob, default)
    # Restart cost: save, then load with the header checked against the ids.
    with tempfile.TemporaryDirectory(dir=REPO / ".bench") as folder:
        path = Path(folder) / "gallery.index"
        start = time.perf_counter()
        index.save(path)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        load_index(path, model_id=MODEL_ID, ids=ids)
        loaded = time.perf_counter() - start
        out["save_s"], out["load_s"] = round(saved, 2), round(loaded, 2)
        out["file_bytes_per_template"] = round(os.path.getsize(path) / len(ids), 1)
    # Erasure cost: remove 10 templates (a subject's), as the gallery does at once.
    start = time.perf_counter()
    index.remove(ids[:10])
    out["remove_10_s"] = round(time.perf_counter() - start, 3)
    index.add(ids[:10], gallery[:10])
    out["_index"] = index
    return out


def set_knob(index: QuantizedIndex | HnswIndex, knob: str, value: int) -> None:
    if isinstance(index, HnswIndex):
        index.expansion_search = value
    else:
        index.params[knob] = value


def bench_filtered(
    index: QuantizedIndex | HnswIndex,
    exact: ExactIndex,
    ids: npt.NDArray[np.int64],
    queries: Array,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Filtered search (allowed = a random fraction of the gallery) against exact filtering."""
    filtered: dict[str, Any] = {}
    n_filter = min(200, len(queries))
    for fraction in (0.01, 0.1, 0.5):
        allowed = np.sort(rng.choice(ids, int(fraction * len(ids)), replace=False))
        _, want = exact.search(queries[:n_filter], K, allowed=allowed)
        exact_timing, _ = time_single(
            lambda q, a=allowed: exact.search(q, K, allowed=a)[1][0], queries[:n_filter]
        )
        timing, found = time_single(
            lambda q, a=allowed: index.search(q, K, allowed=a)[1][0], queries[:n_filter]
        )
        found_array = np.asarray(found)
        leaked = int(np.sum(~np.isin(found_array[found_array >= 0], allowed)))
        filtered[str(fraction)] = {
            "exact_single": exact_timing,
            "index_single": timing,
            **recalls(found_array, want),
            "disallowed_returned": leaked,
            "padded": int(np.sum(found_array < 0)),
        }
        print(f"filtered {fraction}", json.dumps(filtered[str(fraction)]), flush=True)
    return filtered


def switch_over(model: TemplateModel, sizes: list[int], n_queries: int) -> list[dict[str, Any]]:
    """Exact vs quantized-scan single-query latency (and its recall@1) at small sizes."""
    rows = []
    for size in sizes:
        rng = np.random.default_rng(size + 1)
        centres = model.sample_centres(size, rng)
        gallery = model.sample_templates(centres, rng)
        queries = model.sample_templates(centres[rng.choice(size, n_queries)], rng)
        ids = np.arange(size)
        exact = ExactIndex(128, MODEL_ID)
        exact.add(ids, gallery)
        approximate = QuantizedIndex(128, MODEL_ID, rerank=DEFAULT_RERANK)
        approximate.add(ids, gallery)
        exact_t, truth = time_single(lambda q, e=exact: e.search(q, K)[1][0], queries)
        index_t, found = time_single(lambda q, a=approximate: a.search(q, K)[1][0], queries)
        row = {
            "size": size,
            "exact_single": exact_t,
            "quantized_single": index_t,
            **recalls(np.asarray(found), np.asarray(truth)),
        }
        print("switch-over", json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--switch-sizes", default="2000,5000,10000,20000,50000")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--fr-queries", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--methods",
        default="quantized,quantized-no-rotation,quantized-64,hnsw",
        help="Approximate indexes; the first is also measured with filtering.",
    )
    parser.add_argument(
        "--hnsw-max-size",
        type=int,
        default=100_000,
        help="Largest size the HNSW graph is built at (1M takes over 30 min on 2 cores).",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "index.json")
    args = parser.parse_args()
    if not CACHE.exists() and not (args.lfw / "lfw-deepfunneled").is_dir():
        print(f"skipped: no cached templates at {CACHE} and no LFW at {args.lfw}")
        return
    (REPO / ".bench").mkdir(exist_ok=True)
    real = load_templates(args.lfw)
    model = TemplateModel.fit(real["vectors"], real["labels"])
    threshold = facetrust.get_operating_point("dlib-default").threshold
    check = distance_report(model, real["vectors"], real["labels"], threshold=threshold)
    print("model check", json.dumps(check), flush=True)
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        "shared with other engineers' jobs (timings under contention; compare within the run)",
        "real_templates": {"count": len(real["vectors"]), "identities": len(real["names"])},
        "model_check": check,
        "k": K,
        "sizes": [],
    }
    result["switch_over"] = switch_over(
        model, [int(s) for s in args.switch_sizes.split(",") if s], min(args.queries, 300)
    )
    for size in (int(s) for s in args.sizes.split(",") if s):
        result["sizes"].append(
            bench_size(
                model,
                size,
                args.queries,
                args.fr_queries,
                args.batch,
                args.methods.split(","),
                args.hnsw_max_size,
            )
        )
        gc.collect()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)


def print_tables(result: dict[str, Any]) -> None:
    check = result["model_check"]
    print(f"\nSynthetic model vs real LFW templates (distances; threshold {check['threshold']})")
    print("| pairs | real mean | synthetic mean | real std | synthetic std | KS |")
    print("|---|---|---|---|---|---|")
    for side in ("mated", "non_mated"):
        c = check[side]
        print(
            f"| {side} | {c['real']['mean']} | {c['synthetic']['mean']} | {c['real']['std']} | "
            f"{c['synthetic']['std']} | {c['ks']} |"
        )
    print(
        f"FMR at threshold: real {check['fmr']['real']:.4f}, synthetic "
        f"{check['fmr']['synthetic']:.4f}; FNMR: real {check['fnmr']['real']:.4f}, "
        f"synthetic {check['fnmr']['synthetic']:.4f}"
    )
    print(
        "\n| size | method | build s | bytes/template | single p50 ms | single p99 ms | "
        "batch-100 p50 ms | batch-100 p99 ms | recall@1 | recall@10 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in result["sizes"]:
        size = f"{row['size']:,}"
        e = row["exact"]
        print(
            f"| {size} | exact (facetrust) | {e['build_s']} | {e['bytes_per_template']} | "
            f"{e['single']['p50_ms']} | {e['single']['p99_ms']} | {e['batch_100']['p50_ms']} | "
            f"{e['batch_100']['p99_ms']} | 1 | 1 |"
        )
        n = row["numpy_reference"]["single"]
        print(
            f"| {size} | numpy G@q (reference) | - | - | {n['p50_ms']} | {n['p99_ms']} | "
            "- | - | 1 | 1 |"
        )
        fr = row["face_recognition_reference"]
        if fr:
            print(
                f"| {size} | face_recognition.face_distance (reference, {fr['queries']} q) | "
                f"- | - | {fr['single']['p50_ms']} | {fr['single']['p99_ms']} | - | - | "
                f"{fr['agrees_with_exact_at_1']} | - |"
            )
        for method, (knob, _, _) in KNOBS.items():
            h = row.get(method)
            if not h or "by_knob" not in h:
                continue
            for value, m in h["by_knob"].items():
                print(
                    f"| {size} | {method} {knob}={value} | {h['build_s']} | "
                    f"{h['bytes_per_template']} | {m['single']['p50_ms']} | "
                    f"{m['single']['p99_ms']} | {m['batch_100']['p50_ms']} | "
                    f"{m['batch_100']['p99_ms']} | {m['recall_at_1']} | {m['recall_at_10']} |"
                )
    print(
        "\n| size | method | save s | load s | file bytes/template | remove 10 s | "
        "rank-1 identification exact / index (default knob) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in result["sizes"]:
        for method, (_, _, default) in KNOBS.items():
            h = row.get(method)
            if not h or "by_knob" not in h:
                continue
            m = h["by_knob"].get(str(default), h["by_knob"].get(default, {}))
            print(
                f"| {row['size']:,} | {method} | {h['save_s']} | {h['load_s']} | "
                f"{h['file_bytes_per_template']} | {h['remove_10_s']} | "
                f"{row['exact']['identification_rate']} / {m.get('identification_rate')} |"
            )
    print(
        "\n| size | index | allowed | exact p50/p99 ms | index p50/p99 ms | recall@1 | "
        "recall@10 | disallowed returned |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in result["sizes"]:
        for method in KNOBS:
            for fraction, f in row.get(method, {}).get("filtered", {}).items():
                print(
                    f"| {row['size']:,} | {method} | {float(fraction):.0%} | "
                    f"{f['exact_single']['p50_ms']} / {f['exact_single']['p99_ms']} | "
                    f"{f['index_single']['p50_ms']} / {f['index_single']['p99_ms']} | "
                    f"{f['recall_at_1']} | {f['recall_at_10']} | {f['disallowed_returned']} |"
                )
    print("\n| size | exact p50/p99 ms | quantized p50/p99 ms | quantized recall@1 |")
    print("|---|---|---|---|")
    for row in result["switch_over"]:
        print(
            f"| {row['size']:,} | {row['exact_single']['p50_ms']} / "
            f"{row['exact_single']['p99_ms']} | {row['quantized_single']['p50_ms']} / "
            f"{row['quantized_single']['p99_ms']} | {row['recall_at_1']} |"
        )


if __name__ == "__main__":
    main()
