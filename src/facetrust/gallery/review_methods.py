"""The reviewer's methods of :class:`~.core.Gallery`: the human review of 1:N candidates.

Each method is a thin, audited entry to :mod:`.identification` (the decision
on a candidate) and :mod:`.review_desk` (the queue, a case and the photos a
reviewer compares). :class:`~.core.Gallery` inherits them; nothing else does.
"""

from __future__ import annotations

from . import identification, review_desk
from .parts import GalleryParts
from .refusals import audit_refusal
from .review_desk import ProbePhoto, ReferencePhoto, ReviewCase, ReviewQueue
from .types import ReviewStatus

__all__ = ["ReviewMethods"]


class ReviewMethods:
    """Recording decisions on candidates and showing reviewers what they decide on."""

    @property
    def parts(self) -> GalleryParts:
        """The gallery's parts (provided by :class:`~.core.Gallery`)."""
        raise NotImplementedError

    def review(
        self,
        identification_id: str,
        subject_id: str,
        *,
        reviewer: str,
        decision: str = "confirm",
        note: str | None = None,
    ) -> ReviewStatus:
        """Record one reviewer's decision on one candidate of an identification.

        ``reviewer`` is an authenticated principal's id (the service and the
        CLI pass the API key's ``key:<id>``). A candidate is *pending* until
        ``config.review_quorum`` distinct reviewers confirm it (*confirmed*,
        EU AI Act Art. 14(5)) or one rejects it (*rejected*); the quorum is the
        one in force when the search was made, recorded with it, so a later
        change of the config applies to later searches only. Both decisions
        are final. Each decision is audited. A candidate whose consent for the
        search's purpose or retention has ended since, or who was erased, is
        *ineligible*: neither confirmed nor rejected. An identification whose
        every undecided candidate is ineligible is *closed* (audited as
        ``identification.closed``, its probe deleted), here or wherever it is
        first noticed (see :mod:`facetrust.gallery.closing`).

        Parameters
        ----------
        decision : {"confirm", "reject"}

        Raises
        ------
        UnknownIdentification
        InvalidParameter
            ``subject_id`` is not one of the identification's candidates.
        ReviewNotAllowed
            The reviewer ran the search and ``config.searcher_may_review`` is off.
        ReviewClosed
            The candidate is already confirmed or rejected, or this reviewer
            already reviewed it; or it is no longer eligible (the subject's
            consent for the search's purpose or retention period has ended
            since, or the subject was erased: a confirmation counts as an
            interaction and must not extend it); or the identification was
            closed because none of its candidates is eligible any more.

        A refused decision is audited as ``review.refused``.
        """
        with audit_refusal(self.parts.audit, "review", reviewer, None, [subject_id],
                           identification_id=identification_id, decision=decision):
            return identification.review(
                self.parts,
                identification_id,
                subject_id,
                reviewer=reviewer,
                decision=decision,
                note=note,
            )

    def review_queue(
        self, *, reviewer: str, after: str | None = None, limit: int = 25
    ) -> ReviewQueue:
        """The identifications awaiting a review ``reviewer`` may give, oldest first (audited).

        Leaves out ``reviewer``'s own searches unless ``config.searcher_may_review``,
        and those where every pending candidate already has ``reviewer``'s review.
        Pass the returned ``next_after`` as ``after`` for the next page.
        """
        return review_desk.review_queue(self.parts, reviewer=reviewer, after=after, limit=limit)

    def review_case(self, identification_id: str, *, reviewer: str) -> ReviewCase:
        """One identification with where each candidate's review stands (audited).

        A candidate no longer eligible is ``ineligible`` with the reason; an
        identification nobody can decide any more is closed first and shown as
        ``closed``, with the reason in plain English.

        Raises
        ------
        UnknownIdentification
        """
        return review_desk.review_case(self.parts, identification_id, reviewer=reviewer)

    def reference_photo(
        self, identification_id: str, subject_id: str, *, reviewer: str
    ) -> ReferencePhoto:
        """A candidate's enrolled photo, decrypted for display only, or why there is none.

        Given only to a ``reviewer`` who may review the identification, only
        for one of its candidates whose consent still covers the search's
        purpose, and only while it is pending. Each view and each refusal is
        audited (``reference.view``, ``reference.view.refused``).

        Raises
        ------
        UnknownIdentification
        ReviewNotAllowed
            The reviewer ran the search (policy), or the subject is no candidate.
        ReviewClosed
            The identification is decided or closed, or the candidate is no
            longer eligible (consent for the search's purpose or retention
            period ended since the search, or the subject was erased).
        """
        return review_desk.reference_photo(
            self.parts, identification_id, subject_id, reviewer=reviewer
        )

    def probe_photo(self, identification_id: str, *, reviewer: str) -> ProbePhoto:
        """The kept probe of a pending identification and its face box, on the terms
        of :meth:`reference_photo` (audited as ``pending-probe.view``)."""
        return review_desk.probe_photo(self.parts, identification_id, reviewer=reviewer)
