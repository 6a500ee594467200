"""The issue's headline: joint max/min FMR ratio over every group, raw vs normalized, per split.

Usage::

    python benchmarks/bench_fairness_gap.py [DATASET] [--out .bench/fairness-gap]
        [--seeds 0 1 2 3 4] [--replicates 1000] [--workers 2]
        [--methods fsn-k50:fsn:50 cluster-z-k50:cluster-z:50 pairwise-fsn-k20:pairwise-fsn:20]
    python benchmarks/bench_fairness_gap.py --from-json   # re-print/re-render saved seeds

DATASET defaults to ../shared/datasets/lfw (lfw-deepfunneled/ and labels/).
Embeddings come from the evaluation cache (``--cache``, default the user cache).
For each seed, :func:`facetrust.evaluation.gap_study.study_gap`: 5 identity folds,
every cross-identity pair scored by a normalizer fitted without either identity,
one threshold per method at overall FMR 1e-3, group FMR over all within-group
non-mated pairs, identity-bootstrap intervals (re-thresholded per replicate,
paired across methods). The reference is the raw (un-normalized) distance of the
same run, and the issue's target (ratio down >= 2x, FNMR up <= 1 point) is
printed beside each method. Writes ``seed<N>.json`` per seed, ``fairness_gap.json``
and ``report/`` (HTML with before/after bars) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from facetrust.evaluation.gap_report import write_gap_report
from facetrust.evaluation.gap_study import GapStudy, MethodSpec, gap_verdict, study_gap
from facetrust.evaluation.mitigation import RAW, LabelledTemplates
from facetrust.evaluation.report import finite_json
from facetrust.evaluation.run import load_templates

REPO = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = ["fsn-k50:fsn:50", "cluster-z-k50:cluster-z:50",
                   "pairwise-fsn-k20:pairwise-fsn:20"]
#: The issue's targets: the max/min FMR ratio falls at least this many times ...
TARGET_RATIO_REDUCTION = 2.0
#: ... while overall FNMR rises by at most this much (absolute).
TARGET_FNMR_COST = 0.01


def _spec(text: str) -> MethodSpec:
    name, kind, clusters = text.split(":")
    return MethodSpec(name, kind, int(clusters))


def _one_seed(templates: LabelledTemplates, methods: list[MethodSpec], folds: int,
              replicates: int, seed: int, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    study = study_gap(templates, methods, folds=folds, replicates=replicates, seed=seed)
    record = {**study.to_dict(), "seconds": time.perf_counter() - start}
    (out / f"seed{seed}.json").write_text(json.dumps(finite_json(record), indent=1))
    return record


def _ci(ci: list[float] | None, spec: str = ".2f") -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "-"
    return f"[{ci[0]:{spec}}, {ci[1]:{spec}}]"


def _print(studies: list[GapStudy], verdicts: dict[str, dict[str, Any]]) -> None:
    first = studies[0]
    print(f"{first.n_images} images, {first.n_identities} identities, {first.folds} identity "
          f"folds; every non-mated pair scored out of fold ({first.n_non_mated:,}), "
          f"{first.n_mated:,} mated; one threshold per method at overall FMR "
          f"{first.target_fmr:g}; {first.replicates}"
          " identity-bootstrap replicates")
    for study in studies:
        print(f"\nseed {study.seed}: per group (groups with >= {study.min_identities} identities"
              "; '<=' = no false match, 3/N bound)")
        print(f"{'method':18} {'group':26} {'ids':>5} {'pairs':>10} {'FM':>6} {'FMR':>10} "
              f"{'FMR 95% CI':>20} {'FNMR':>6} {'FNMR 95% CI':>15}")
        info = {(g["attribute"], g["group"]): g for g in study.groups}
        for m in study.methods:
            for g in m["groups"]:
                meta = info[(g["attribute"], g["group"])]
                flag = "" if g["enough_identities"] else "  (too few ids: no conclusion)"
                if not g["enough_identities"] and m["method"] != RAW:
                    continue
                fmr = ("-" if g["fmr"] is None else
                       ("<=" if g["fmr_is_rule_of_three_bound"] else "") + f"{g['fmr']:.2e}")
                print(f"{m['method']:18} {g['attribute'] + '=' + g['group']:26} "
                      f"{meta['n_identities']:5d} {meta['n_non_mated']:10d} "
                      f"{g['false_matches']:6d} {fmr:>10} {_ci(g['fmr_ci95'], '.1e'):>20} "
                      f"{'-' if g['fnmr'] is None else format(g['fnmr'], '.3f'):>6} "
                      f"{_ci(g['fnmr_ci95'], '.3f'):>15}{flag}")
    print("\nmax/min FMR ratio (groups >= 50 identities) and its reduction vs raw "
          "(reference: raw distances, same run; target reduction >= 2x, FNMR cost <= 1 pt)")
    print(f"{'seed':>4} {'method':18} {'FNMR':>6} {'cost (pt) [95% CI]':>22} {'ratio':12} "
          f"{'max/min [95% CI]':>24} {'reduction [95% CI]':>24}  groups")
    for study in studies:
        for m in study.methods:
            cost = ("-" if "fnmr_cost" not in m else
                    f"{m['fnmr_cost'] * 100:+.2f} [{m['fnmr_cost_ci95'][0] * 100:+.2f}, "
                    f"{m['fnmr_cost_ci95'][1] * 100:+.2f}]")
            for name, r in m["ratios"].items():
                reduction = ("-" if "reduction" not in r else
                             f"{r['reduction']:.2f} {_ci(r['reduction_ci95'])}")
                bound = " (min is 3/N bound)" if r["min_is_bound"] else ""
                print(f"{study.seed:4d} {m['method']:18} {m['overall_fnmr']:6.3f} {cost:>22} "
                      f"{name:12} {r['ratio']:8.2f} {_ci(r['ci95']):>15} {reduction:>24}  "
                      f"{r['max_group']}/{r['min_group']}{bound}")
    print("\nverdict (joint ratio over every group with >= 50 identities):")
    for name, v in verdicts.items():
        seeds = ", ".join(str(r["seed"]) for r in v["seeds"])
        print(f"  {name} (seeds {seeds}): met on every seed: {v['met']}; shown at 95% on "
              f"every seed: {v['shown_at_95']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", type=Path,
                        default=REPO.parent / "shared" / "datasets" / "lfw")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "fairness-gap")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--replicates", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="Seeds run in parallel.")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                        help="name:kind:clusters, kind in fsn, cluster-z, pairwise-fsn.")
    parser.add_argument("--from-json", action="store_true",
                        help="Do not compute: read the seed<N>.json files under --out.")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    counts: dict[str, int] = {}
    if not args.from_json:
        images_dir = args.dataset / "lfw-deepfunneled"
        if not images_dir.is_dir():
            print(f"skipped: {images_dir} not found", file=sys.stderr)
            return 0
        templates, counts = load_templates(images_dir, [args.dataset / "labels"],
                                           cache=args.cache, workers=args.workers)
        methods = [_spec(m) for m in args.methods]
        with ProcessPoolExecutor(max_workers=max(1, min(args.workers, len(args.seeds)))) as pool:
            jobs = [pool.submit(_one_seed, templates, methods, args.folds, args.replicates,
                                seed, args.out) for seed in args.seeds]
            for job in jobs:
                job.result()
    studies = [GapStudy.from_dict(json.loads((args.out / f"seed{s}.json").read_text()))
               for s in args.seeds]
    # A method added later may have been run on fewer seeds: its verdict says which.
    names = dict.fromkeys(m["method"] for s in studies for m in s.methods if m["method"] != RAW)
    verdicts = {
        name: gap_verdict([s for s in studies if any(m["method"] == name for m in s.methods)],
                          name, target_reduction=TARGET_RATIO_REDUCTION,
                          max_fnmr_cost=TARGET_FNMR_COST)
        for name in names
    }
    by_attribute = {
        name: {a: gap_verdict([s for s in studies
                               if any(m["method"] == name for m in s.methods)], name, ratio=a,
                              target_reduction=TARGET_RATIO_REDUCTION,
                              max_fnmr_cost=TARGET_FNMR_COST)
               for a in studies[0].method(RAW)["ratios"] if a != "all"}
        for name in names
    }
    _print(studies, verdicts)
    print("per attribute (the same target on each attribute's own ratio):")
    for name, attributes in by_attribute.items():
        print(f"  {name}: " + "; ".join(
            f"{a} met {v['met']}, shown at 95% {v['shown_at_95']}" for a, v in attributes.items()))
    write_gap_report(args.out / "report", studies, verdicts,
                     title="facetrust: the demographic gap on LFW, raw vs normalized",
                     meta={"dataset": "LFW deep-funneled", "seeds": str(args.seeds),
                           "protocol": "bench_fairness_gap.py / facetrust.evaluation.gap_study"})
    (args.out / "fairness_gap.json").write_text(json.dumps(finite_json(
        {"verdicts": verdicts, "verdicts_by_attribute": by_attribute,
         "studies": [s.to_dict() for s in studies], "cache": counts,
         "targets": {"ratio_reduction": TARGET_RATIO_REDUCTION,
                     "fnmr_cost": TARGET_FNMR_COST}}), indent=1))
    print(f"wrote {args.out / 'fairness_gap.json'} and {args.out / 'report'} "
          f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
