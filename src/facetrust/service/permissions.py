"""The one table that says which role may call which operation.

Every route of the API and every page of the console names its operation
here; a route whose operation is missing from the table cannot be called by
anyone (and a test fails). Operations not listed in :data:`PUBLIC` need an
API key.
"""

from __future__ import annotations

from collections.abc import Mapping

from .apikeys import Role

E, O, A, D = Role.ENROLLER, Role.OPERATOR, Role.AUDITOR, Role.ADMIN
ANY_ROLE = frozenset(Role)

#: operation id -> roles allowed to call it.
PERMISSIONS: Mapping[str, frozenset[Role]] = {
    # who am I, and the policy every role works under (no biometric data)
    "whoami": ANY_ROLE,
    "get_policy": ANY_ROLE,
    # enroller: subjects, consents, enrolment, erasure
    "create_subject": frozenset({E}),
    "list_subjects": frozenset({E}),
    "get_subject": frozenset({E}),
    "grant_consent": frozenset({E}),
    "list_consents": frozenset({E}),
    "withdraw_consent": frozenset({E}),
    "enroll_photo": frozenset({E}),
    "erase_subject": frozenset({E}),
    # operator: 1:1 and 1:N search, and the human review of candidates
    "verify_photos": frozenset({O}),
    "verify_subject": frozenset({O}),
    "identify": frozenset({O}),
    "review_candidate": frozenset({O}),
    # auditor: read-only audit log and evaluation reports
    "verify_audit_chain": frozenset({A}),
    "get_audit_head": frozenset({A}),
    "list_audit_events": frozenset({A}),
    "export_audit_events": frozenset({A}),
    "list_reports": frozenset({A}),
    "get_report": frozenset({A}),
    # admin: keys, policy, retention sweep
    "create_api_key": frozenset({D}),
    "list_api_keys": frozenset({D}),
    "revoke_api_key": frozenset({D}),
    "sweep_retention": frozenset({D}),
}

#: Operations callable without a key (no gallery data in them).
PUBLIC = frozenset({"health", "ready", "metrics", "problem_types"})


def permits(role: Role, operation: str) -> bool:
    """Whether ``role`` may call ``operation`` (False for unknown operations)."""
    return role in PERMISSIONS.get(operation, frozenset())


def operations_of(role: Role) -> list[str]:
    """The operations ``role`` may call, in table order."""
    return [op for op, roles in PERMISSIONS.items() if role in roles]
