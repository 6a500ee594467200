"""Does score normalization shrink the demographic gap on LFW? Per group, before and after.

Usage::

    python benchmarks/bench_fairness.py [DATASET] [--out .bench/fairness] [--folds 5]
        [--clusters 10 20 50 100] [--replicates 200]

DATASET defaults to ../shared/datasets/lfw (lfw-deepfunneled/ and labels/).
Embeddings come from the evaluation cache (``--cache``, default the user cache;
images it lacks are embedded). Identity-disjoint 5-fold cross-fitting (see
:mod:`facetrust.evaluation.mitigation`): raw distances, fair score normalization
and per-cluster z-normalisation, each at ONE threshold giving FMR 1e-3 over all
held-out non-mated pairs. Prints the per-group table and the issue's targets
beside the measured values; writes ``fairness.json`` and ``report/`` (HTML with the
before/after bars) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from facetrust.evaluation.mitigation import RAW
from facetrust.evaluation.run import run_fairness

REPO = Path(__file__).resolve().parents[1]
#: The issue's targets: the max/min FMR ratio falls at least this many times ...
TARGET_RATIO_REDUCTION = 2.0
#: ... while overall FNMR rises by at most this much (absolute).
TARGET_FNMR_COST = 0.01


def _fmt(rate: float | None, bound: bool = False) -> str:
    if rate is None:
        return "-"
    return f"<={rate:.2e}" if bound else f"{rate:.2e}"


def _ci(ci: list[float] | tuple[float, float] | None) -> str:
    return "-" if not ci else f"[{ci[0]:.1e}, {ci[1]:.1e}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path,
                        default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "fairness")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--clusters", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the folds and bootstrap.")
    args = parser.parse_args(argv)
    images_dir = args.dataset / "lfw-deepfunneled"
    if not images_dir.is_dir():
        print(f"skipped: {images_dir} not found", file=sys.stderr)
        return 0
    start = time.perf_counter()
    run = run_fairness(images_dir, [args.dataset / "labels"], dataset="LFW deep-funneled",
                       folds=args.folds, clusters=args.clusters, cache=args.cache,
                       workers=args.workers, replicates=args.replicates, seed=args.seed,
                       report_dir=args.out / "report")
    study, counts = run.mitigation, run.cache
    if study is None:
        raise SystemExit("run_fairness returned no study")
    raw = study.method(RAW)
    print(f"LFW deep-funneled: {study.n_images} images with a face, {study.n_identities} "
          f"identities, {args.folds} identity folds; held-out pairs: {study.n_non_mated:,} "
          f"non-mated, {study.n_mated:,} mated; one threshold per method at overall FMR "
          f"{study.target_fmr:g}")
    print(f"{'method':10} {'group':22} {'ids':>5} {'non-mated':>10} {'FMR':>10} "
          f"{'FMR 95% CI':>20} {'FNMR':>7} {'FNMR 95% CI':>16}")
    for method in study.methods:
        for g in method.groups:
            flag = "" if g.enough else "  (<50 ids: no conclusion)"
            print(f"{method.method:10} {g.attribute + '=' + g.group:22} {g.n_identities:5d} "
                  f"{g.n_non_mated:10d} {_fmt(g.fmr, g.fmr_bound):>10} {_ci(g.fmr_ci):>20} "
                  f"{(g.fnmr if g.fnmr is not None else float('nan')):7.4f} "
                  f"{_ci(g.fnmr_ci):>16}{flag}")
    print()
    print(f"{'method':10} {'k per fold':16} {'threshold':>9} {'FMR':>9} {'FNMR':>7} "
          f"{'FNMR cost':>9}  max/min FMR ratio (groups >= {study.min_identities} ids)")
    verdicts: dict[str, dict[str, Any]] = {}
    for method in study.methods:
        cost = method.overall_fnmr - raw.overall_fnmr
        ratios = "; ".join(
            f"{a}: {r['ratio']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
            f"({r['max_group']}/{r['min_group']}{', lower bound' if r['lower_bound'] else ''})"
            for a, r in method.ratios.items()
        )
        print(f"{method.method:10} {str(method.clusters or '-'):16} {method.threshold:9.4f} "
              f"{method.overall_fmr:9.2e} {method.overall_fnmr:7.4f} {cost:+9.4f}  {ratios}")
        if method.method != RAW:
            reductions = {a: raw.ratios[a]["ratio"] / r["ratio"]
                          for a, r in method.ratios.items() if a in raw.ratios}
            verdicts[method.method] = {
                "ratio_reduction": reductions,
                "fnmr_cost": cost,
                "meets_targets": all(v >= TARGET_RATIO_REDUCTION for v in reductions.values())
                and cost <= TARGET_FNMR_COST,
            }
    print()
    print(f"targets: ratio reduction >= {TARGET_RATIO_REDUCTION:g}x, FNMR cost <= "
          f"{TARGET_FNMR_COST:.0%} (absolute)")
    for name, verdict in verdicts.items():
        text = ", ".join(f"{a} {v:.2f}x" for a, v in verdict["ratio_reduction"].items())
        print(f"  {name}: ratio reduction {text}; FNMR cost "
              f"{verdict['fnmr_cost']:+.4f}; targets met: {verdict['meets_targets']}")
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"study": study.to_dict(), "verdicts": verdicts, "cache": counts,
           "seconds": time.perf_counter() - start}
    (args.out / "fairness.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out / 'fairness.json'} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
