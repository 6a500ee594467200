"""The one table that says which role may call which operation.

Every route of the API and every page of the console names its operation
here; a route whose operation is missing from the table cannot be called by
anyone (and a test fails). Operations not listed in :data:`PUBLIC` need an
API key.
"""

from __future__ import annotations

from collections.abc import Mapping

from .apikeys import Role

ENR, OPR, AUD, ADM = Role.ENROLLER, Role.OPERATOR, Role.AUDITOR, Role.ADMIN
ANY_ROLE = frozenset(Role)

#: operation id -> roles allowed to call it.
PERMISSIONS: Mapping[str, frozenset[Role]] = {
    # who am I, and the policy every role works under (no biometric data)
    "whoami": ANY_ROLE,
    "get_policy": ANY_ROLE,
    # enroller: subjects, consents, enrolment, erasure
    "create_subject": frozenset({ENR}),
    "list_subjects": frozenset({ENR}),
    "get_subject": frozenset({ENR}),
    "grant_consent": frozenset({ENR}),
    "list_consents": frozenset({ENR}),
    "withdraw_consent": frozenset({ENR}),
    "enroll_photo": frozenset({ENR}),
    "erase_subject": frozenset({ENR}),
    # operator: 1:1 and 1:N search, and the human review of candidates
    "verify_photos": frozenset({OPR}),
    "verify_subject": frozenset({OPR}),
    "identify": frozenset({OPR}),
    "review_candidate": frozenset({OPR}),
    "list_review_queue": frozenset({OPR}),
    "get_review_case": frozenset({OPR}),
    "get_probe_photo": frozenset({OPR}),
    "get_reference_photo": frozenset({OPR}),
    # auditor: read-only audit log and evaluation reports
    "verify_audit_chain": frozenset({AUD}),
    "get_audit_head": frozenset({AUD}),
    "list_audit_events": frozenset({AUD}),
    "export_audit_events": frozenset({AUD}),
    "list_reports": frozenset({AUD}),
    "get_report": frozenset({AUD}),
    # admin: keys, policy, retention sweep
    "create_api_key": frozenset({ADM}),
    "list_api_keys": frozenset({ADM}),
    "revoke_api_key": frozenset({ADM}),
    "sweep_retention": frozenset({ADM}),
}

#: Operations callable without a key (no gallery data in them).
PUBLIC = frozenset({"health", "ready", "metrics", "problem_types"})


def permits(role: Role, operation: str) -> bool:
    """Whether ``role`` may call ``operation`` (False for unknown operations)."""
    return role in PERMISSIONS.get(operation, frozenset())


def operations_of(role: Role) -> list[str]:
    """The operations ``role`` may call, in table order."""
    return [op for op, roles in PERMISSIONS.items() if role in roles]
