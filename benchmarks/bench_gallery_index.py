"""Gallery identify at scale: exact scan vs the approximate indexes, through the gallery index.

Enrolling 100k templates through the full gallery (consent records, encryption,
audit, one transaction each) would take far longer than the search being
measured, so this builds the gallery's search index (:class:`TemplateIndex`,
the object ``Gallery.identify`` searches) directly from synthetic templates
and consent records. Templates come from a
:class:`facetrust.index.synthetic.TemplateModel` fitted to real dlib templates
of LFW (``benchmarks/lfw_templates.py``), two per subject, as
``bench_index.py`` does. A fraction of the subjects is ineligible for the
searched purpose (consent to another purpose only, or expired), so every search
is filtered.

Reported from the same run, for the exact kind (the reference: the gallery's
single-threaded scan over the eligible templates) and each approximate kind
(``quantized``, the default past 20k templates, and ``hnsw``; the search gets
the eligible template ids as its exact allowed set):

* build time of the index;
* identify latency p50/p99 (one probe, k=5);
* recall@1 of each approximate search against the exact one (same top
  subject), with no threshold (every search returns k subjects) and at the
  operating point;
* the rank-1 rate of mated probes, and a count of ineligible subjects returned
  (must be 0);
* save + load time of the encrypted index file (the restart cost).

Usage::

    python benchmarks/bench_gallery_index.py [--templates 100000]
        [--kinds exact,quantized,hnsw] [--queries 300] [--ineligible 0.3]
        [--lfw ../shared/datasets/lfw] [--out benchmarks/results/gallery_index.json]

``exact`` is always measured (it is the reference); the HNSW graph takes over
30 minutes to build at 1M templates on 2 cores, so leave it out there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

import facetrust
from facetrust import crypto
from facetrust.gallery import index_file
from facetrust.gallery.index import TemplateIndex
from facetrust.index.synthetic import TemplateModel
from facetrust.store.base import ConsentRecord

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lfw_templates import CACHE, load_templates  # noqa: E402
from timing import percentiles  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 6, 1, tzinfo=UTC)
K = 5
PER_SUBJECT = 2


def consents_for(subjects: list[str], ineligible: float, rng: np.random.Generator) -> tuple[
    list[ConsentRecord], np.ndarray
]:
    """Boarding consent for most subjects; other purpose or expired for ``ineligible`` of them."""
    records, eligible = [], np.ones(len(subjects), dtype=bool)
    draw = rng.random(len(subjects))
    for i, subject in enumerate(subjects):
        purposes, days = ("boarding",), 30
        if draw[i] < ineligible / 2:
            purposes = ("access-control",)
            eligible[i] = False
        elif draw[i] < ineligible:
            days = -1
            eligible[i] = False
        records.append(
            ConsentRecord(
                f"c{i}", subject, purposes, (NOW - timedelta(days=60)).isoformat(),
                (NOW + timedelta(days=days)).isoformat(), "form", "ab" * 32, "v1",
            )
        )
    return records, eligible



def run(
    model: TemplateModel,
    n_templates: int,
    n_queries: int,
    ineligible: float,
    threshold: float,
    kinds: list[str],
) -> dict[str, Any]:
    rng = np.random.default_rng(n_templates)
    n_subjects = n_templates // PER_SUBJECT
    centres = model.sample_centres(n_subjects, rng)
    subjects = [f"s{i}" for i in range(n_subjects)]
    vectors = np.concatenate([model.sample_templates(centres, rng) for _ in range(PER_SUBJECT)])
    owners = np.tile(np.arange(n_subjects), PER_SUBJECT)
    templates = [(subjects[o], v) for o, v in zip(owners.tolist(), vectors, strict=True)]
    consents, eligible = consents_for(subjects, ineligible, rng)
    who = rng.choice(n_subjects, n_queries, replace=False)
    queries = model.sample_templates(centres[who], rng)
    retention = {s: NOW + timedelta(days=365) for s in subjects}
    purposes = ("boarding", "access-control")
    result: dict[str, Any] = {
        "templates": n_templates,
        "subjects": n_subjects,
        "ineligible_fraction": round(1 - float(eligible.mean()), 3),
        "queries": n_queries,
        "k": K,
    }
    answers: dict[str, list[list[str]]] = {}
    for kind in kinds:
        start = time.perf_counter()
        index = TemplateIndex.build(
            1, "synthetic", templates, retention, consents, purposes,
            kind=kind, exact_below=20_000,
        )
        built = time.perf_counter() - start
        index.search(queries[0], purpose="boarding", now=NOW, k=K, threshold=10.0)  # warm
        times, ranked, at_point = [], [], []
        for query in queries:
            begin = time.perf_counter()
            hits, _ = index.search(query, purpose="boarding", now=NOW, k=K, threshold=10.0)
            times.append(time.perf_counter() - begin)
            ranked.append([h.subject_id for h in hits])
            hits, _ = index.search(query, purpose="boarding", now=NOW, k=K, threshold=threshold)
            at_point.append([h.subject_id for h in hits])
        answers[kind], answers[kind + "@point"] = ranked, at_point
        returned = {s for row in ranked for s in row}
        leaked = sum(not eligible[int(s[1:])] for s in returned)
        mated = [
            bool(row) and row[0] == subjects[w]
            for row, w in zip(ranked, who.tolist(), strict=True)
            if eligible[w]
        ]
        row = {
            "build_s": round(built, 2),
            "graph": index.templates.is_approximate,
            "identify": percentiles(times),
            "rank1_rate_mated_eligible": round(float(np.mean(mated)), 4),
            "ineligible_returned": int(leaked),
        }
        if kind != "exact":
            row["restart"] = save_and_load(index)
            row.update(agreement(answers, kind))
        result[kind] = row
        print(kind, json.dumps(row), flush=True)
    return result


def agreement(answers: dict[str, list[list[str]]], kind: str) -> dict[str, float]:
    """Recall of ``kind``'s answers against the exact ones (top subject, top 5, at the point)."""
    exact, found = answers["exact"], answers[kind]
    top = [(a[:1] == b[:1]) for a, b in zip(found, exact, strict=True)]
    same_at_point = [
        a == b for a, b in zip(answers[kind + "@point"], answers["exact@point"], strict=True)
    ]
    overlap = [len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(found, exact, strict=True)]
    return {
        "recall_at_1_vs_exact": round(float(np.mean(top)), 4),
        "recall_at_5_vs_exact": round(float(np.mean(overlap)), 4),
        "same_candidates_at_operating_point": round(float(np.mean(same_at_point)), 4),
    }


def save_and_load(index: TemplateIndex) -> dict[str, Any]:
    key = crypto.generate_key()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "synthetic.index"
        start = time.perf_counter()
        index_file.write_sealed_index(path, key, index.templates)
        saved = time.perf_counter() - start
        size = path.stat().st_size
        start = time.perf_counter()
        loaded = index_file.read_sealed_index(path, key, "synthetic")
        read = time.perf_counter() - start
    return {
        "save_s": round(saved, 2),
        "load_s": round(read, 2),
        "file_bytes_per_template": round(size / len(loaded.index), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--templates", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--ineligible", type=float, default=0.3)
    parser.add_argument("--kinds", default="quantized,hnsw", help="Approximate kinds to measure.")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "gallery_index.json"
    )
    args = parser.parse_args()
    if not CACHE.exists() and not (args.lfw / "lfw-deepfunneled").is_dir():
        print(f"skipped: no cached templates at {CACHE} and no LFW at {args.lfw}")
        return
    real = load_templates(args.lfw)
    model = TemplateModel.fit(real["vectors"], real["labels"])
    point = facetrust.get_operating_point(None)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        "shared with other engineers' jobs (timings under contention; compare within the run)",
        "operating_point": {"name": point.name, "threshold": point.threshold},
        **run(
            model,
            args.templates,
            args.queries,
            args.ineligible,
            point.threshold,
            ["exact", *[k for k in args.kinds.split(",") if k and k != "exact"]],
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    kinds = [k for k in ("exact", "quantized", "hnsw") if k in result]
    print(
        f"\nGallery identify, {result['templates']:,} templates ({result['subjects']:,} subjects, "
        f"{result['ineligible_fraction']:.0%} ineligible), k={result['k']}, "
        f"{result['queries']} mated probes"
    )
    print("| | " + " | ".join(kinds) + " |")
    print("|---" * (len(kinds) + 1) + "|")

    def line(name: str, value: Callable[[dict[str, Any]], object]) -> None:
        print(f"| {name} | " + " | ".join(str(value(result[k])) for k in kinds) + " |")

    line("build s", lambda r: r["build_s"])
    line("identify p50 ms", lambda r: r["identify"]["p50_ms"])
    line("identify p99 ms", lambda r: r["identify"]["p99_ms"])
    line("rank-1 rate (mated, eligible)", lambda r: r["rank1_rate_mated_eligible"])
    line("ineligible subjects returned", lambda r: r["ineligible_returned"])
    line("recall@1 vs exact", lambda r: r.get("recall_at_1_vs_exact", "-"))
    line("recall@5 vs exact", lambda r: r.get("recall_at_5_vs_exact", "-"))
    line(
        f"same candidates at {result['operating_point']['name']}",
        lambda r: r.get("same_candidates_at_operating_point", "-"),
    )
    line(
        "encrypted file save / load s",
        lambda r: f"{r['restart']['save_s']} / {r['restart']['load_s']}" if "restart" in r else "-",
    )
    line(
        "file bytes/template",
        lambda r: r["restart"]["file_bytes_per_template"] if "restart" in r else "-",
    )


if __name__ == "__main__":
    main()
