"""Checks of the values a caller hands the gallery: names, purposes, subject ids, ``k``.

Each returns the cleaned value or raises :class:`~facetrust.errors.InvalidParameter`
(or :class:`~facetrust.errors.PurposeRequired`) with a message that says what to pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidParameter, PurposeRequired
from . import index_file

MAX_SUBJECT_ID_LENGTH = 200


def check_name(value: str | None, what: str) -> str:
    """``value`` stripped, if it names a person or service (an actor, a reviewer, ...)."""
    if not value or not value.strip():
        raise InvalidParameter(f"The '{what}' must name a person or service. Got {value!r}.")
    return value.strip()


def check_purpose(purpose: str | None, purposes: Sequence[str]) -> str:
    """``purpose`` if it is one of the gallery's ``purposes``.

    Raises
    ------
    PurposeRequired
        No purpose was stated.
    InvalidParameter
        The purpose is not one the gallery accepts.
    """
    if not purpose:
        raise PurposeRequired(
            "A search or verification must state its purpose (one of: "
            + ", ".join(purposes)
            + "). Pass purpose=... (or --purpose)."
        )
    if purpose not in purposes:
        raise InvalidParameter(
            f"The purpose {purpose!r} is not one this gallery accepts. Known purposes: "
            + ", ".join(purposes)
            + "."
        )
    return purpose


def check_subject_id(subject_id: str) -> str:
    """``subject_id`` if it can name a new subject (1 to 200 characters, not reserved)."""
    if not subject_id.strip() or len(subject_id) > MAX_SUBJECT_ID_LENGTH:
        raise InvalidParameter(
            f"A subject id must be 1 to {MAX_SUBJECT_ID_LENGTH} characters. "
            f"Got {subject_id!r} instead."
        )
    if subject_id.startswith(index_file.KEY_PREFIX):
        raise InvalidParameter(
            f"Subject ids starting with {index_file.KEY_PREFIX!r} are reserved. "
            f"Got {subject_id!r}; choose another id."
        )
    return subject_id


def check_k(k: object) -> int:
    """``k`` if it is an int >= 1 (the most candidates a search returns)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidParameter(f"The 'k' parameter must be an int >= 1. Got {k!r} instead.")
    return k
