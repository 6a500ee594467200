"""The parts of a gallery, bundled for the operations that use them.

:class:`GalleryParts` is what the operation modules (enrolment,
identification, erasure, key rotation) receive instead of the
:class:`~facetrust.gallery.Gallery` facade, so they depend on the parts and
never on the facade that builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..audit import AuditLog
from ..errors import InvalidParameter
from ..matching import OperatingPoint, get_operating_point, operating_points
from ..pipeline import FacePipeline, FacePolicy
from ..store.base import KeyStore, Store, SubjectRecord
from ..times import to_utc
from .calibrations import recorded_points
from .config import GalleryConfig
from .consent import retention_until
from .indexes import SearchIndexes
from .keyring import Keyring
from .probes import FaceInput, Probe, read_probe

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the gallery's clock unless one is injected)."""
    return datetime.now(UTC)


def utc_clock(clock: Clock | None) -> Clock:
    """``clock`` read in UTC, the zone every stored time is in (:func:`utc_now` if None).

    An injected clock that returns another zone (``datetime.now().astimezone()``)
    is converted, so stored times stay in one zone and compare as text; one that
    returns naive datetimes (``datetime.now``) is refused at its first reading,
    before anything is written, since nothing says which zone it meant.

    Raises
    ------
    InvalidParameter
        (when the returned clock is read) ``clock`` gave something other than
        a timezone-aware datetime.
    """
    if clock is None:
        return utc_now
    given = clock

    def read() -> datetime:
        moment = given()
        if not isinstance(moment, datetime) or moment.tzinfo is None:
            shown = (f"{moment.isoformat()}, which has no time zone"
                     if isinstance(moment, datetime) else f"a {type(moment).__name__}")
            raise InvalidParameter(
                "The gallery's clock (now=) must return timezone-aware datetimes, such as "
                f"datetime.now(UTC). Got {shown}."
            )
        return to_utc(moment, "clock")

    return read


@dataclass
class EventOnlyMemo:
    """The subjects enrolled for one event only, as read at one store generation
    (a change to any event's members moves the generation)."""

    generation: int | None = None
    subjects: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GalleryParts:
    """Everything an operation on one open gallery needs.

    Attributes
    ----------
    config : GalleryConfig
    gallery_id : str
    store, keystore : Store, KeyStore
    keyring : Keyring
    audit : AuditLog
    indexes : SearchIndexes
    clock : callable
        Returns the current time, timezone-aware UTC.
    pipeline : callable
        Returns the face pipeline (built on first use).
    hook : callable or None
        Called with a stage name at points a test may interrupt.
    event_only : EventOnlyMemo
        The event-only subjects searches leave out, kept for one generation.
    """

    config: GalleryConfig
    gallery_id: str
    store: Store
    keystore: KeyStore
    keyring: Keyring
    audit: AuditLog
    indexes: SearchIndexes
    clock: Clock
    pipeline: Callable[[], FacePipeline]
    hook: Callable[[str], None] | None = None
    event_only: EventOnlyMemo = field(default_factory=EventOnlyMemo)

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return self.clock()

    def stamp(self) -> str:
        """The current time as ISO 8601 text."""
        return self.clock().isoformat()

    def pause(self, stage: str) -> None:
        """Let a test interrupt the operation at ``stage`` (no-op without a hook)."""
        if self.hook is not None:
            self.hook(stage)

    def operating_point(self, model_id: str, name: str | None = None) -> OperatingPoint:
        """The operating point ``name`` (the gallery's by default) for templates of
        ``model_id``: the shipped table's for the models it covers, else the points
        recorded in this gallery for ``model_id`` (:mod:`.calibrations`).

        Raises
        ------
        OperatingPointError
            No such point for ``model_id``, or the model has no calibrated point.
        """
        # the shipped table wins: a gallery's points are read only for other models
        recorded = () if operating_points(model_id) else recorded_points(self.store, model_id)
        return get_operating_point(name or self.config.operating_point, model_id,
                                   recorded=recorded)

    def retention_until(self, subject: SubjectRecord) -> datetime:
        """When ``subject`` leaves retention."""
        return retention_until(subject, self.config.retention_days)

    def read_probe(self, face: FaceInput, face_policy: FacePolicy) -> Probe:
        """Embed ``face`` with the gallery's pipeline (see :func:`.probes.read_probe`)."""
        return read_probe(self.pipeline(), face, face_policy)
