"""The evaluation report: one self-contained HTML page and one JSON file.

Plots are drawn with matplotlib's Agg backend and inlined as base64 PNGs, so
the page can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import CalibrationTable
from .demographics import DemographicAudit, GroupResult
from .metrics import det_curve, roc_curve
from .mitigation import MitigationStudy
from .protocol import PairsEvaluation


@dataclass(frozen=True)
class ReportFiles:
    """Paths of a written report."""

    html: Path
    json: Path


def figure_png_uri(figure: Any) -> str:
    """A matplotlib ``figure`` as a ``data:image/png;base64,...`` URI for an HTML report."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def pyplot_module() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(evaluation: PairsEvaluation) -> tuple[str, str]:
    plt = pyplot_module()
    fmr, tar, _ = roc_curve(evaluation.labels, evaluation.distances)
    figure, axis = plt.subplots(figsize=(5, 4))
    floor = 1.0 / max(1, int((~evaluation.labels).sum()))
    axis.plot(np.clip(fmr, floor / 2, 1), tar)
    axis.set_xscale("log")
    axis.set_xlim(floor / 2, 1)
    axis.set_xlabel("false match rate (FMR)")
    axis.set_ylabel("true accept rate (TAR = 1 - FNMR)")
    axis.set_title("ROC")
    axis.grid(True, which="both", alpha=0.3)
    roc = figure_png_uri(figure)
    fmr_d, fnmr_d, _ = det_curve(evaluation.labels, evaluation.distances)
    figure, axis = plt.subplots(figsize=(5, 4))
    # Rates of 0 cannot be drawn on log axes: they are drawn at half of 1/N.
    floor_fnmr = 1.0 / max(1, int(evaluation.labels.sum()))
    axis.plot(np.clip(fmr_d, floor / 2, 1), np.clip(fnmr_d, floor_fnmr / 2, 1))
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("false match rate (FMR)")
    axis.set_ylabel("false non-match rate (FNMR)")
    axis.set_title("DET (lower left is better; 0 drawn at 1/(2N))")
    axis.grid(True, which="both", alpha=0.3)
    return roc, figure_png_uri(figure)


def _group_chart(groups: Sequence[GroupResult], rate: str, attribute: str) -> str:
    plt = pyplot_module()
    shown = [g for g in groups if g.attribute == attribute and getattr(g, rate) is not None]
    figure, axis = plt.subplots(figsize=(max(4, 1.1 * len(shown) + 1), 3.2))
    values = [getattr(g, rate) for g in shown]
    cis = [getattr(g, rate + "_ci") or (v, v) for g, v in zip(shown, values, strict=True)]
    lower = [max(0.0, v - c[0]) for v, c in zip(values, cis, strict=True)]
    upper = [max(0.0, c[1] - v) for v, c in zip(values, cis, strict=True)]
    colours = ["tab:blue" if g.status == "ok" else "tab:gray" for g in shown]
    axis.bar(range(len(shown)), values, yerr=[lower, upper], capsize=4, color=colours)
    axis.set_xticks(range(len(shown)))
    axis.set_xticklabels([f"{g.group}\n(n={g.n_identities} ids)" for g in shown], fontsize=8)
    axis.set_ylabel(rate.upper())
    axis.set_title(f"{rate.upper()} by {attribute} (95% CI; grey = too few pairs)")
    return figure_png_uri(figure)


def _before_after_chart(study: MitigationStudy, attribute: str) -> str:
    """Per-group FMR bars, one colour per method side by side, with 95% CIs (log scale)."""
    plt = pyplot_module()
    names = sorted({g.group for m in study.methods for g in m.groups if g.attribute == attribute})
    figure, axis = plt.subplots(figsize=(max(5, 1.6 * len(names) + 1), 3.4))
    width = 0.8 / len(study.methods)
    for offset, method in enumerate(study.methods):
        rates = {g.group: g for g in method.groups if g.attribute == attribute}
        colour, labelled = f"C{offset}", False
        for index, name in enumerate(names):
            if name not in rates:
                continue
            g = rates[name]
            x = index + (offset - (len(study.methods) - 1) / 2) * width
            low = max(0.0, g.fmr - g.fmr_ci[0]) if np.isfinite(g.fmr_ci[0]) else 0.0
            high = max(0.0, g.fmr_ci[1] - g.fmr) if np.isfinite(g.fmr_ci[1]) else 0.0
            # A group with no false match shows its rule-of-three bound, hatched and pale.
            axis.bar(
                x, g.fmr, width, yerr=[[0.0 if g.fmr_bound else low], [high]], capsize=3,
                color=colour, alpha=0.35 if g.fmr_bound else 1.0,
                hatch="//" if g.fmr_bound else None,
                label=None if labelled else method.method,
            )
            labelled = True
    axis.axhline(study.target_fmr, color="black", linewidth=0.8, linestyle="--")
    axis.set_yscale("log")
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, fontsize=8)
    axis.set_ylabel("FMR (held-out identities)")
    axis.set_title(f"FMR by {attribute} before/after normalization (overall FMR "
                   f"{study.target_fmr:g}, dashed; hatched = no false match, 3/N bound)",
                   fontsize=9)
    axis.legend(fontsize=8)
    return figure_png_uri(figure)


def _mitigation_parts(study: MitigationStudy) -> list[str]:
    raw = study.methods[0]
    parts = [
        "<h2>Reducing the demographic gap</h2>"
        f"<p>{study.folds} identity-disjoint folds: each normalizer is fitted on the other "
        "folds' identities and applied to the held-out fold. One threshold per method at "
        f"overall FMR {study.target_fmr:g} over {study.n_non_mated} held-out non-mated "
        f"pairs; {study.n_mated} mated pairs. An FMR shown as &lt;= is the rule-of-three "
        "bound 3/N (no false match seen); a ratio using it is a lower bound. Groups with "
        f"fewer than {study.min_identities} identities are shown but support no conclusion."
        "</p>",
        html_table(
            ["method", "clusters per fold", "threshold", "overall FMR", "overall FNMR",
             "FNMR 95% CI", "FNMR cost", "max/min FMR ratio (95% CI)"],
            [
                (m.method, ", ".join(map(str, m.clusters)) or "-", m.threshold,
                 m.overall_fmr, m.overall_fnmr, m.overall_fnmr_ci,
                 m.overall_fnmr - raw.overall_fnmr,
                 "; ".join(
                     f"{a}: {r['ratio']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
                     f"({r['max_group']}/{r['min_group']})"
                     for a, r in m.ratios.items()
                 ))
                for m in study.methods
            ],
        ),
        html_table(
            ["method", "attribute", "group", "identities", "non-mated pairs", "FMR",
             "FMR 95% CI", "mated pairs", "FNMR", "FNMR 95% CI", "conclusive"],
            [
                (m.method, g.attribute, g.group, g.n_identities, g.n_non_mated,
                 f"<= {g.fmr:.2e}" if g.fmr_bound else g.fmr, g.fmr_ci, g.n_mated, g.fnmr,
                 g.fnmr_ci, "yes" if g.enough else "no (too few identities)")
                for m in study.methods
                for g in m.groups
            ],
        ),
    ]
    for attribute in dict.fromkeys(g.attribute for g in raw.groups):
        chart = _before_after_chart(study, attribute)
        parts.append(
            f'<img alt="FMR by {attribute} before and after" src="data:image/png;base64,'
            f'{chart}">'
        )
    return parts


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table of ``rows`` under ``headers`` (every cell escaped)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e4:
            return f"{value:.4f}"
        return f"{value:.2e}"
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
    return str(value)


def _caveats(
    evaluation: PairsEvaluation | None,
    audit: DemographicAudit | None,
    calibration: CalibrationTable | None,
) -> list[str]:
    items = [
        "LFW is a set of news photos of public figures, mostly frontal, well lit and taken "
        "by professionals; error rates on surveillance, phone or ID photos will differ.",
        "LFW's identities are mostly white men; some groups have a handful of people, so "
        "their rates rest on few identities and their confidence intervals are wide.",
        "Confidence intervals come from resampling identities (not pairs), because pairs "
        "of one person are not independent. They do not cover label errors.",
    ]
    if evaluation is not None:
        items.append(
            f"{evaluation.fta_pairs} of {evaluation.n_pairs} pairs had an image the pipeline "
            f"refused (failure to acquire). They count as errors in accuracy, and the "
            f"{evaluation.fta_mated} mated ones as false rejects in the false-reject rate; "
            "they are left out of EER, TAR and FNMR, which are over the pairs compared."
        )
    if audit is not None:
        items.append(
            "Group labels come from the dataset's label files, never from the faces: gender "
            "per image (manually checked, Afifi & Abdelhamed 2017) and race per identity "
            "(external labels; identities with several labels are left out). Labels are "
            "coarse categories that do not describe how people identify themselves."
        )
        items.append(
            "Non-mated pairs are drawn within each group, as NIST FRVT Part 3 does: a "
            "false match is most likely between people of similar appearance."
        )
        small = [f"{g.attribute}={g.group}" for g in audit.groups if g.status != "ok"]
        if small:
            items.append(
                "Too few pairs to compare (reported, left out of the differentials): "
                + ", ".join(small)
                + "."
            )
    if calibration is not None:
        items.append(
            "A threshold for FMR 1e-4 needs at least 30,000 non-mated pairs (rule of three: "
            "0 false matches in N pairs only shows FMR <= 3/N). The non-mated pairs reuse "
            "images, so they are not independent, and rates this low rest on few errors."
        )
    return items


REPORT_STYLE = (
    "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:right}th{background:#f3f3f3}img{max-width:100%}"
)


def write_report(
    directory: str | os.PathLike[str],
    *,
    title: str = "facetrust evaluation",
    evaluation: PairsEvaluation | None = None,
    audit: DemographicAudit | None = None,
    calibration: CalibrationTable | None = None,
    meta: dict[str, Any] | None = None,
    mitigation: MitigationStudy | None = None,
) -> ReportFiles:
    """Write ``report.html`` (self-contained) and ``report.json`` into ``directory``.

    Any of the three parts may be omitted; the page shows what it is given.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"title": title, "meta": meta or {}}
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if meta:
        parts.append(html_table(["", ""], [(k, v) for k, v in meta.items()]))
    if evaluation is not None:
        summary = evaluation.summary()
        record["pairs"] = summary
        rows: list[tuple[str, Any]] = [
            ("pairs (mated / non-mated)", f"{evaluation.n_mated} / {evaluation.n_non_mated}"),
            ("accuracy (10-fold, mean +- std)",
             f"{evaluation.mean_accuracy:.4f} +- {evaluation.std_accuracy:.4f}"),
            ("equal error rate", evaluation.eer),
            ("EER threshold (distance)", evaluation.eer_threshold),
        ]
        for target, value in evaluation.tar_at_fmr.items():
            at = f"at FMR {target:g} (threshold {value['threshold']:.4f})"
            rows.append((f"TAR {at}", value["tar"]))
            rows.append((f"FNMR {at}, compared mated pairs", value["fnmr"]))
            rows.append((f"false-reject rate {at}, refused mated pairs counted as rejects",
                         value["false_reject_rate"]))
        rows.append(("failure-to-acquire pairs (counted as errors; mated / non-mated)",
                     f"{evaluation.fta_pairs} ({evaluation.fta_mated} / "
                     f"{evaluation.fta_non_mated})"))
        rows.append(("images with no face (refused)", evaluation.faces.no_face))
        rows.append(("images with several faces and no clear subject (refused)",
                     evaluation.faces.several_faces_refused))
        rows.append(("images below the quality minimums (refused)",
                     evaluation.faces.low_quality))
        rows.append(("images with several faces (subject face used)",
                     evaluation.faces.several_faces))
        roc, det = _curves(evaluation)
        parts += [
            "<h2>Verification accuracy</h2>",
            html_table(["measure", "value"], rows),
            f'<img alt="ROC curve" src="data:image/png;base64,{roc}">',
            f'<img alt="DET curve" src="data:image/png;base64,{det}">',
        ]
    if audit is not None:
        record["demographics"] = audit.to_dict()
        parts.append(
            f"<h2>Error rates by group</h2><p>At operating point "
            f"{html.escape(audit.operating_point or 'custom')}, distance threshold "
            f"{audit.threshold:.4f} (match when distance &lt;= threshold). FNMR is over the "
            "mated pairs whose two images were acquired; the false-reject rate is over every "
            "mated pair drawn, a pair with an image the pipeline refused counted as a "
            "reject.</p>"
        )
        parts.append(
            html_table(
                ["attribute", "group", "identities", "images", "FTA rate",
                 "FTA rate, first detection pass", "FTA 95% CI", "wrong-face rate",
                 "wrong-face 95% CI", "mated pairs compared",
                 "FNMR", "FNMR 95% CI", "mated pairs refused", "false-reject rate",
                 "false-reject 95% CI", "non-mated pairs", "FMR", "FMR 95% CI", "status"],
                [
                    (g.attribute, g.group, g.n_identities, g.n_images, g.fta_rate,
                     g.fta_first_pass_rate, g.fta_ci, g.wrong_face_rate, g.wrong_face_ci,
                     g.n_mated, g.fnmr, g.fnmr_ci, g.fta_mated_pairs, g.false_reject_rate,
                     g.false_reject_ci, g.n_non_mated, g.fmr, g.fmr_ci, g.status)
                    for g in audit.groups
                ],
            )
        )
        parts.append(
            html_table(
                ["attribute", "groups compared", "FMR max/min", "highest FMR", "lowest FMR",
                 "FNMR max/min", "highest FNMR", "lowest FNMR"],
                [
                    (d.attribute, ", ".join(d.groups), d.fmr_ratio, d.fmr_max_group,
                     d.fmr_min_group, d.fnmr_ratio, d.fnmr_max_group, d.fnmr_min_group)
                    for d in audit.differentials
                ],
            )
        )
        for attribute in dict.fromkeys(g.attribute for g in audit.groups):
            for rate in ("fmr", "fnmr"):
                chart = _group_chart(audit.groups, rate, attribute)
                parts.append(
                    f'<img alt="{rate} by {attribute}" src="data:image/png;base64,{chart}">'
                )
        parts.append(
            html_table(
                ["attribute", "source", "labelled images", "labels naming unknown images",
                 "excluded"],
                [
                    (n["attribute"], n["source"], n["labelled_images"],
                     n["labels_naming_unknown_images_or_identities"], json.dumps(n["excluded"]))
                    for n in audit.label_notes
                ],
            )
        )
    if calibration is not None:
        record["calibration"] = calibration.to_dict()
        parts.append(
            f"<h2>Calibration table</h2><p>{html.escape(calibration.dataset)}, model "
            f"{html.escape(calibration.model_id)}, {calibration.date}. Non-mated set: "
            f"{html.escape(json.dumps(calibration.impostor_set))}.</p>"
        )
        parts.append(
            html_table(
                ["operating point", "target FMR", "threshold", "measured FMR",
                 "non-mated pairs", "lowest supported FMR (3/N)", "FNMR",
                 "mated pairs compared", "false-reject rate, refused mated pairs as rejects",
                 "mated pairs refused", "note"],
                [
                    (r.name, r.target_fmr, r.threshold, r.measured_fmr, r.n_non_mated,
                     r.lowest_supported_fmr, r.fnmr, r.n_mated, r.false_reject_rate,
                     r.fta_mated, r.note)
                    for r in calibration.rows
                ],
            )
        )
    if mitigation is not None:
        record["mitigation"] = mitigation.to_dict()
        parts += _mitigation_parts(mitigation)
    caveats = _caveats(evaluation, audit, calibration)
    record["caveats"] = caveats
    items = "".join(f"<li>{html.escape(c)}</li>" for c in caveats)
    parts.append(f"<h2>Caveats</h2><ul>{items}</ul>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{REPORT_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    html_path = folder / "report.html"
    json_path = folder / "report.json"
    html_path.write_text(page, encoding="utf-8")
    text = json.dumps(finite_json(record), indent=2, default=json_default)
    json_path.write_text(text + "\n", encoding="utf-8")
    return ReportFiles(html_path, json_path)


def finite_json(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    return value


def json_default(value: Any) -> Any:
    """JSON encoding of numpy scalars (for ``json.dumps(default=...)``)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
