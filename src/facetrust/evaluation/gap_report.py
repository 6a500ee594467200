"""HTML + JSON report of :func:`~facetrust.evaluation.gap_study.study_gap` over several splits.

One self-contained page: the verdict, the joint and per-attribute max/min FMR
ratios per seed with their intervals, the per-group table of each seed and
before/after FMR bars with 95% intervals.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .gap_study import GapStudy
from .report import (
    REPORT_STYLE,
    ReportFiles,
    figure_png_uri,
    finite_json,
    html_table,
    json_default,
    pyplot_module,
)


def _ci(ci: Sequence[float | None] | None, digits: str = ".2f") -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "-"
    return f"[{ci[0]:{digits}}, {ci[1]:{digits}}]"


def _rate(value: float | None, bound: bool) -> str:
    if value is None:
        return "-"
    return f"<= {value:.2e}" if bound else f"{value:.2e}"


def _bars(study: GapStudy) -> str:
    """FMR of every conclusive group, one colour per method, 95% intervals, log scale."""
    plt = pyplot_module()
    names = [f"{g['attribute']}={g['group']}" for g in study.groups if g["enough_identities"]]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.3 * len(names) + 1), 3.6))
    width = 0.8 / len(study.methods)
    for offset, method in enumerate(study.methods):
        rows = {f"{g['attribute']}={g['group']}": g for g in method["groups"]}
        for index, name in enumerate(names):
            g = rows[name]
            x = index + (offset - (len(study.methods) - 1) / 2) * width
            low, high = g["fmr_ci95"]
            axis.bar(
                x, g["fmr"], width, capsize=3, color=f"C{offset}",
                yerr=[[max(0.0, g["fmr"] - low)], [max(0.0, high - g["fmr"])]],
                alpha=0.35 if g["fmr_is_rule_of_three_bound"] else 1.0,
                hatch="//" if g["fmr_is_rule_of_three_bound"] else None,
                label=method["method"] if index == 0 else None,
            )
    axis.axhline(study.target_fmr, color="black", linewidth=0.8, linestyle="--")
    axis.set_yscale("log")
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, fontsize=7, rotation=15)
    axis.set_ylabel("FMR, all within-group non-mated pairs")
    axis.set_title(f"seed {study.seed}: FMR per group at one overall FMR {study.target_fmr:g} "
                   "(dashed); 95% identity-bootstrap intervals", fontsize=9)
    axis.legend(fontsize=7)
    return figure_png_uri(figure)


def write_gap_report(
    directory: str | os.PathLike[str],
    studies: Sequence[GapStudy],
    verdicts: Mapping[str, Mapping[str, Any]],
    *,
    title: str,
    meta: Mapping[str, Any] | None = None,
) -> ReportFiles:
    """Write ``report.html`` and ``report.json`` for the studies of several seeds."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    first = studies[0]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        html_table(["", ""], list((meta or {}).items())),
        "<h2>Verdict</h2>",
        "<p>Target: at one overall FMR of "
        f"{first.target_fmr:g}, the max/min FMR ratio among groups with at least "
        f"{first.min_identities} identities falls at least 2x, overall FNMR rising by at "
        "most 1 point. <b>met</b>: point estimates on every seed; <b>shown at 95%</b>: the "
        "reduction's interval lies above 2 and the FNMR cost's below 1 point on every "
        "seed.</p>",
        html_table(
            ["method", "ratio", "met (points, every seed)", "shown at 95%", "per seed"],
            [(name, v["ratio"], v["met"], v["shown_at_95"],
              "; ".join(f"seed {r['seed']}: {r['reduction']:.2f}x {_ci(r['reduction_ci95'])}, "
                        f"FNMR {r['fnmr_cost'] * 100:+.2f} pt "
                        f"[{r['fnmr_cost_ci95'][0] * 100:+.2f}, "
                        f"{r['fnmr_cost_ci95'][1] * 100:+.2f}]" for r in v["seeds"]))
             for name, v in verdicts.items()],
        ),
        "<h2>Ratios per seed</h2>",
        "<p>Every cross-identity pair is scored by a normalizer fitted without either "
        "identity (identity folds; cross-fold pairs use a normalizer fitted on the "
        "remaining folds). Ratio = highest / lowest group FMR; a group with no false match "
        "counts at its 3/N bound (flagged). Intervals: identity bootstrap, re-thresholded "
        "per replicate, the same draws for every method.</p>",
        html_table(
            ["seed", "method", "threshold", "overall FNMR", "FNMR cost", "ratio",
             "max/min", "95% CI", "groups", "reduction", "reduction 95% CI"],
            [(s.seed, m["method"], m["threshold"], m["overall_fnmr"],
              m.get("fnmr_cost"), name, r["ratio"], _ci(r["ci95"]),
              f"{r['max_group']} / {r['min_group']}"
              + (" (min is a 3/N bound)" if r["min_is_bound"] else ""),
              r.get("reduction"), _ci(r.get("reduction_ci95")))
             for s in studies for m in s.methods for name, r in m["ratios"].items()],
        ),
    ]
    for study in studies:
        parts.append(f"<h2>Per group, seed {study.seed}</h2>")
        info = {(g["attribute"], g["group"]): g for g in study.groups}
        parts.append(html_table(
            ["method", "attribute", "group", "identities", "non-mated pairs", "false matches",
             "FMR", "FMR 95% CI", "mated pairs", "FNMR", "FNMR 95% CI", "conclusive"],
            [(m["method"], g["attribute"], g["group"],
              info[(g["attribute"], g["group"])]["n_identities"],
              info[(g["attribute"], g["group"])]["n_non_mated"], g["false_matches"],
              _rate(g["fmr"], g["fmr_is_rule_of_three_bound"]), _ci(g["fmr_ci95"], ".1e"),
              info[(g["attribute"], g["group"])]["n_mated"], g["fnmr"],
              _ci(g["fnmr_ci95"], ".3f"),
              "yes" if g["enough_identities"] else "no (too few identities)")
             for m in study.methods for g in m["groups"]],
        ))
        parts.append(f'<img alt="FMR per group, seed {study.seed}" '
                     f'src="data:image/png;base64,{_bars(study)}">')
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{REPORT_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    html_path, json_path = folder / "report.html", folder / "report.json"
    html_path.write_text(page, encoding="utf-8")
    record = {"title": title, "meta": dict(meta or {}), "verdicts": verdicts,
              "studies": [s.to_dict() for s in studies]}
    json_path.write_text(
        json.dumps(finite_json(record), indent=2, default=json_default) + "\n", encoding="utf-8"
    )
    return ReportFiles(html_path, json_path)
