"""Measuring facetrust on real photos: accuracy, demographic differentials, calibration.

Modules, one concern each:

- :mod:`.pairs`: LFW ``pairs.txt`` and CSV pairs files
- :mod:`.cache`: embeddings computed once per (file hash, model) in SQLite
- :mod:`.metrics`: FMR, FNMR, EER, ROC/DET, threshold at a target FMR
  (on distances: lower is more similar)
- :mod:`.protocol`: the 10-fold LFW View 2 protocol
- :mod:`.demographics`: group labels and per-group error rates (NIST FRVT Part 3 style)
- :mod:`.bootstrap`: identity-resampling confidence intervals
- :mod:`.calibration`: operating points for target FMRs, rule of three, worst-group points
- :mod:`.mitigation`: does unsupervised score normalization shrink the gap (held-out identities)
- :mod:`.gap_study`: the joint max/min FMR ratio over every group on every pair scored
  out of fold, raw vs normalized, with paired bootstrap intervals (:mod:`.gap_report`)
- :mod:`.fair_point`: fitting the shipped normalizer (its ``fmr-1e-3-fair`` point is set by
  :func:`.run.run_calibration`)
- :mod:`.fairness_gate`: fail a deployment whose FMR differential is too large
- :mod:`.report`: self-contained HTML and JSON report
- :mod:`.run`: the end-to-end runs behind ``facetrust evaluate``
"""

from .cache import CachedFace, CachedImage, EmbeddingCache, default_cache_path
from .calibration import CalibrationRow, CalibrationTable, calibrate, write_operating_points
from .demographics import AttributeLabels, DemographicAudit, GroupResult, audit_groups, load_labels
from .metrics import (
    det_curve,
    equal_error_rate,
    false_match_rate,
    false_non_match_rate,
    roc_curve,
    rule_of_three,
    threshold_at_fmr,
    true_accept_rate_at_fmr,
)
from .mitigation import LabelledTemplates, MitigationStudy, study_mitigation
from .pairs import Pair, read_pairs
from .protocol import PairsEvaluation, evaluate_pairs
from .report import ReportFiles, write_report
from .run import EvaluationRun, run_calibration, run_demographics, run_pairs

__all__ = [
    "AttributeLabels",
    "CachedFace",
    "CachedImage",
    "CalibrationRow",
    "CalibrationTable",
    "DemographicAudit",
    "EmbeddingCache",
    "EvaluationRun",
    "GroupResult",
    "LabelledTemplates",
    "MitigationStudy",
    "Pair",
    "PairsEvaluation",
    "ReportFiles",
    "audit_groups",
    "calibrate",
    "default_cache_path",
    "det_curve",
    "equal_error_rate",
    "evaluate_pairs",
    "false_match_rate",
    "false_non_match_rate",
    "load_labels",
    "read_pairs",
    "roc_curve",
    "rule_of_three",
    "run_calibration",
    "run_demographics",
    "run_pairs",
    "study_mitigation",
    "threshold_at_fmr",
    "true_accept_rate_at_fmr",
    "write_operating_points",
    "write_report",
]
