"""The policy a service runs under, and the audit event that records each change of it.

The gallery's policy (purposes, retention, review quorum, whether the
searcher may review, duplicate policy, operating point) lives in its config
file, and the service's limits in its settings; both are read when a server
starts. So that a change leaves a trace, every start compares the policy in
force with the last ``policy.changed`` event and, when they differ (or none
was recorded), appends a new ``policy.changed`` event holding the new policy,
the previous one and the names of the settings that changed. ``GET /v1/policy``
shows the same policy (:func:`published_policy`), so the two cannot drift.
"""

from __future__ import annotations

from typing import Any

from ..audit import AuditEvent
from ..gallery import Gallery
from .settings import ServiceSettings

__all__ = ["POLICY_FIELDS", "current_policy", "published_policy", "record_policy_change"]

#: Gallery config fields that are policy (the rest are paths and backends).
POLICY_FIELDS = ("purposes", "retention_days", "review_quorum", "searcher_may_review",
                 "pending_probe_hours", "duplicate_policy", "operating_point")
#: Service settings that are policy (the image caps come from the pipeline instead).
LIMIT_FIELDS = ("max_body_bytes", "identify_per_minute", "identify_burst",
                "request_timeout_s", "auth_failures_per_minute", "auth_failure_burst",
                "console_idle_minutes", "console_session_hours")


def current_policy(gallery: Gallery, settings: ServiceSettings) -> dict[str, Any]:
    """The policy in force: the gallery's policy fields and the service's limits, with
    the image caps the gallery's pipeline enforces (``max_pixels``,
    ``max_image_bytes``: the lower of the service's and the library's), not the
    service's configured ones."""
    config = gallery.config.to_dict()
    policy = {name: config[name] for name in POLICY_FIELDS}
    caps = gallery.pipeline.settings
    limits = {name: getattr(settings, name) for name in LIMIT_FIELDS}
    policy["limits"] = {**limits, "max_pixels": caps.max_pixels, "max_image_bytes": caps.max_bytes}
    return policy


def published_policy(gallery: Gallery, settings: ServiceSettings) -> dict[str, Any]:
    """The policy in force as ``GET /v1/policy`` shows it: :func:`current_policy`, with
    the operating point in full (name, threshold, target FMR, ...) as it applies to the
    gallery's model, where the config (and the audit event) holds its name or None
    for the model's default."""
    policy = current_policy(gallery, settings)
    point = gallery.operating_point()
    return {**policy, "operating_point": point.to_dict()}


def _flat(policy: dict[str, Any]) -> dict[str, Any]:
    limits = policy.get("limits") or {}
    return {**{k: v for k, v in policy.items() if k != "limits"},
            **{f"limits.{k}": v for k, v in limits.items()}}


def record_policy_change(gallery: Gallery, settings: ServiceSettings) -> AuditEvent | None:
    """Append ``policy.changed`` if the policy differs from the last one recorded.

    Returns the new event, or None when the policy is unchanged.
    """
    policy = current_policy(gallery, settings)
    previous: dict[str, Any] | None = None
    for event in gallery.audit.events(kind="policy.changed"):
        previous = event.fields.get("policy")
    if previous == policy:
        return None
    old, new = _flat(previous or {}), _flat(policy)
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    return gallery.audit.append(
        "policy.changed", actor="service", policy=policy, previous=previous, changed=changed
    )
