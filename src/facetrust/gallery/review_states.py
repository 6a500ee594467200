"""Where the review of an identification stands: the states of its candidates and of
the identification as a whole, computed from the stored reviews.

A candidate is ``pending`` until ``review_quorum`` distinct reviewers confirm it
(``confirmed``) or one reviewer rejects it (``rejected``); the quorum is the one
recorded with the identification when the search was made (:func:`quorum_of`),
so a later change of the gallery's config, up or down, applies to later searches
only and never re-decides a case; a pending candidate
whose subject may not be confirmed any more for the search's purpose (consent
withdrawn or expired, subject erased, retention ended) is ``ineligible``. An
identification is ``pending`` while a candidate may still be decided, and
``closed`` once every candidate left undecided is ineligible (:mod:`.closing`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..store.base import IdentificationRecord, ReviewRecord

__all__ = [
    "IDENTIFICATION_STATES",
    "REVIEW_STATES",
    "candidate_reviews",
    "identification_state",
    "quorum_of",
    "review_state",
]

#: The states of one candidate of an identification under review. A candidate is
#: ``pending`` until ``review_quorum`` distinct reviewers confirm it
#: (``confirmed``) or one reviewer rejects it (``rejected``). Both decisions are
#: final: a later review of a decided candidate is refused (:class:`ReviewClosed`),
#: so a reject cannot undo a confirmation that others may already have acted on.
#: A pending candidate who may not be confirmed any more for the search's purpose
#: is ``ineligible``: neither confirmed nor rejected, refused the same way.
REVIEW_STATES = ("pending", "confirmed", "rejected", "ineligible")


def quorum_of(record: IdentificationRecord, current: int) -> int:
    """The number of distinct confirmations that decide a candidate of ``record``: the
    gallery's quorum when the search was made, as recorded with it.

    ``current`` (the gallery's quorum now) stands in only for a search made before
    facetrust recorded the quorum with the identification whose ``identify`` audit
    event carries none (the migration fills the others from the log).
    """
    return current if record.review_quorum is None else record.review_quorum


def review_state(confirmed: int, rejected: int, quorum: int) -> str:
    """The state of a candidate with ``confirmed`` confirmations and ``rejected``
    rejections from distinct reviewers, given reviews arrive only while pending."""
    if rejected:
        return "rejected"
    return "confirmed" if confirmed >= quorum else "pending"


#: The states of a whole identification: ``pending`` while a candidate may still be
#: decided, ``confirmed`` once one is, ``rejected`` once every candidate is,
#: ``closed`` once every candidate left undecided is ``ineligible`` (nobody can
#: decide it), and ``no-candidate`` when the search found nobody (nothing to review).
IDENTIFICATION_STATES = ("pending", "confirmed", "rejected", "closed", "no-candidate")


def identification_state(candidate_states: Iterable[str]) -> str:
    """The state of an identification whose candidates are in ``candidate_states``."""
    states = list(candidate_states)
    if not states:
        return "no-candidate"
    if "confirmed" in states:
        return "confirmed"
    if "pending" in states:
        return "pending"
    return "closed" if "ineligible" in states else "rejected"


def candidate_reviews(
    record: IdentificationRecord, reviews: Iterable[ReviewRecord], quorum: int,
    ineligible: Mapping[str, str] | None = None,
) -> dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Per candidate (in rank order): its state, who confirmed it and who rejected it.

    A candidate still pending whose subject id is in ``ineligible`` is ``ineligible``.
    """
    found: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}
    listed = list(reviews)
    for subject_id, _, _ in record.candidates:
        mine = [r for r in listed if r.subject_id == subject_id]
        confirmed = tuple(r.reviewer for r in mine if r.decision == "confirm")
        rejected = tuple(r.reviewer for r in mine if r.decision == "reject")
        state = review_state(len(confirmed), len(rejected), quorum)
        if state == "pending" and ineligible and subject_id in ineligible:
            state = "ineligible"
        found[subject_id] = (state, confirmed, rejected)
    return found
