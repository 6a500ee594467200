"""The fairness gate: refuse an operating point whose FMR differential is too large.

``facetrust evaluate demographics --max-fmr-ratio R`` runs
:func:`fmr_ratio_gate` on the audit and exits with status 3 when it fails, so a
deployment can refuse to go live with an unacceptable differential.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import EvaluationError
from .demographics import DemographicAudit


@dataclass(frozen=True)
class FairnessGate:
    """Outcome of the FMR-differential gate (``evaluate demographics --max-fmr-ratio``).

    Attributes
    ----------
    passed : bool
    max_ratio : float
        The largest FMR ratio allowed between any measured group and the best one.
    attribute, worst_group, best_group : str or None
        Where the largest ratio was found.
    ratio : float or None
        Worst group's FMR over the best group's (the best counted at least at
        its rule-of-three bound 3/N when it had no false match, so the gate
        never fails on a ratio the data cannot support).
    message : str
    """

    passed: bool
    max_ratio: float
    attribute: str | None
    worst_group: str | None
    best_group: str | None
    ratio: float | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fmr_ratio_gate(audit: DemographicAudit, max_ratio: float) -> FairnessGate:
    """Fail when any measured group's FMR exceeds ``max_ratio`` x the best group's.

    Only groups with enough pairs (status ``"ok"``) are measured; groups of
    different attributes are never compared with each other.

    Raises
    ------
    EvaluationError
        ``max_ratio`` is below 1.
    """
    if not max_ratio >= 1.0:
        raise EvaluationError(
            f"The 'max_fmr_ratio' parameter must be a number >= 1. Got {max_ratio} instead."
        )
    worst: tuple[float, str, str, str] | None = None
    for attribute in dict.fromkeys(g.attribute for g in audit.groups):
        measured = [
            g for g in audit.groups
            if g.attribute == attribute and g.status == "ok" and g.fmr is not None
        ]
        if len(measured) < 2:
            continue
        high = max(measured, key=lambda g: g.fmr or 0.0)
        low = min(measured, key=lambda g: max(g.fmr or 0.0, 3.0 / g.n_non_mated))
        floor = max(low.fmr or 0.0, 3.0 / low.n_non_mated)
        ratio = (high.fmr or 0.0) / floor
        if worst is None or ratio > worst[0]:
            worst = (ratio, attribute, high.group, low.group)
    if worst is None:
        return FairnessGate(
            True, max_ratio, None, None, None, None,
            "No attribute has two groups with enough pairs to compare; nothing to gate.",
        )
    ratio, attribute, high_group, low_group = worst
    passed = ratio <= max_ratio
    verdict = "is within" if passed else "exceeds"
    message = (
        f"FMR of {attribute}={high_group} is {ratio:.2f}x that of {attribute}={low_group} at "
        f"operating point {audit.operating_point or 'custom'} (threshold {audit.threshold:.4f}); "
        f"this {verdict} the allowed {max_ratio:g}x."
    )
    if not passed:
        message += (
            " Do not deploy at this operating point: use a fairer one (e.g. fmr-1e-3-fair or "
            "an -all-groups point) and re-run the audit."
        )
    return FairnessGate(passed, max_ratio, attribute, high_group, low_group, ratio, message)
