"""Gallery settings: one frozen object, saved by ``facetrust init`` as a small JSON file.

Later commands find the gallery from ``--gallery`` (a config file or the folder
holding one), else ``FACETRUST_GALLERY``, else ``./facetrust-gallery.json``.
Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, StoreError
from ..index.auto import DEFAULT_EXACT_THRESHOLD
from .checks import check_purposes

CONFIG_NAME = "facetrust-gallery.json"
GALLERY_ENV = "FACETRUST_GALLERY"
#: A PostgreSQL URL that overrides the config's ``database_url`` (keeps passwords
#: out of the config file).
DATABASE_URL_ENV = "FACETRUST_DATABASE_URL"

#: Purposes a new gallery accepts unless configured otherwise.
DEFAULT_PURPOSES = ("access-control", "boarding", "photo-library")

#: BIPA (740 ILCS 14/15(a)): destroy biometric identifiers at the latest 3 years
#: after the individual's last interaction with the private entity.
DEFAULT_RETENTION_DAYS = 3 * 365
#: The longest retention a gallery may set: 100 years. Far longer periods would
#: reach past the year 9999 (or before the year 1) in the arithmetic of
#: retention deadlines, and no purpose justifies keeping a face that long.
MAX_RETENTION_DAYS = 36_500

#: How the in-memory search finds the nearest templates (see :mod:`.vectors`).
INDEX_KINDS = ("auto", "exact", "quantized", "hnsw")

#: EU AI Act Art. 14(5): a biometric identification is acted on only once
#: verified and confirmed separately by at least two natural persons.
DEFAULT_REVIEW_QUORUM = 2
#: Longest time (hours) the probe of an identification awaiting review is kept.
DEFAULT_PENDING_PROBE_HOURS = 24.0


@dataclass(frozen=True)
class GalleryConfig:
    """Where a gallery lives and the policies it enforces.

    Attributes
    ----------
    db_path : Path
        The SQLite gallery file (subjects, consents, encrypted templates, audit).
    keystore_path : Path
        The SQLite file of wrapped per-subject data keys; keep it out of bulk
        backups (erasure destroys keys here, and only here).
    key_file : Path or None
        The master key file (mode 0600). ``FACETRUST_MASTER_KEY`` overrides it.
    purposes : tuple of str
        The purposes consent can be granted for and searches can state: each 1 to
        100 characters a caller can type (no outer spaces, no control or
        invisible characters), no two differing only in case or Unicode form.
    retention_days : int
        Templates are never returned, and are purged by the retention sweep,
        this many days after the subject's last interaction (enrolment,
        consent change, verification, confirmed identification); 1 to
        :data:`MAX_RETENTION_DAYS` (100 years).
    review_quorum : int
        Distinct reviewers (authenticated principals: in the service and the
        CLI, distinct API keys) who must confirm a candidate before it becomes
        a confirmed identification.
    searcher_may_review : bool
        Whether the operator who ran an identification may be one of its
        reviewers. False (the default): review is by people other than the
        one who searched.
    pending_probe_hours : float
        How long, at most, the probe photo of an identification awaiting
        review is kept (sealed under a key of its own) so reviewers can see
        it beside the candidates: it is deleted, and its key destroyed, when
        the identification is decided, or by the retention sweep after this
        many hours. 0 keeps no probe.
    duplicate_policy : str
        ``"warn"`` or ``"refuse"`` when a new face matches another subject.
    operating_point : str or None
        Threshold name from the calibration table; the table's default if None.
    database_url : str or None
        ``postgresql://...``: keep the gallery in this PostgreSQL database
        instead of ``db_path`` (``FACETRUST_DATABASE_URL`` overrides it).
    keystore_url : str or None
        ``postgresql://...``: keep the data keys in this database (another one
        than ``database_url``, ideally on another server) instead of
        ``keystore_path``.
    server_side_search : bool
        PostgreSQL only: also store each template's protected (rotated) vector
        unencrypted in a pgvector column so that identification runs in the
        database (HNSW index). Off by default: it weakens at-rest protection of
        those vectors from encryption to keyed rotation.
    index_kind : str
        ``"auto"`` (exact search below ``index_exact_below`` templates, the
        quantized scan of :class:`facetrust.index.QuantizedIndex` from there
        on), ``"exact"`` (always one matrix product), ``"quantized"`` (the scan
        at every size) or ``"hnsw"`` (an HNSW graph, needs the ``index`` extra).
        When the library a kind needs cannot be imported the gallery searches
        exactly, with a warning.
    index_exact_below : int
        Gallery size (templates of one model) from which ``"auto"`` builds the
        approximate index; a search whose eligible templates are fewer also
        runs exactly.
    index_dir : Path or None
        Folder where the approximate index is kept between runs, encrypted (see
        :mod:`facetrust.gallery.index_file`); None keeps it in memory only.
    """

    db_path: Path
    keystore_path: Path
    key_file: Path | None = None
    purposes: tuple[str, ...] = DEFAULT_PURPOSES
    retention_days: int = DEFAULT_RETENTION_DAYS
    review_quorum: int = DEFAULT_REVIEW_QUORUM
    searcher_may_review: bool = False
    pending_probe_hours: float = DEFAULT_PENDING_PROBE_HOURS
    duplicate_policy: str = "warn"
    operating_point: str | None = None
    database_url: str | None = None
    keystore_url: str | None = None
    server_side_search: bool = False
    index_kind: str = "auto"
    index_exact_below: int = DEFAULT_EXACT_THRESHOLD
    index_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.keystore_url is not None and self.keystore_url == self.database_url:
            raise InvalidParameter(
                "The 'keystore_url' must name another database than 'database_url': a backup "
                "of the gallery database would otherwise hold the keys erasure destroys. "
                "Got the same URL for both."
            )
        check_purposes(self.purposes)
        for name in ("retention_days", "review_quorum"):
            value = getattr(self, name)
            # a whole number: NaN or 1.5 from a hand-edited file would pass "< 1"
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidParameter(
                    f"The '{name}' setting must be a whole number, at least 1. Got {value!r}."
                )
        if self.retention_days > MAX_RETENTION_DAYS:
            raise InvalidParameter(
                f"The 'retention_days' setting must be at most {MAX_RETENTION_DAYS} (100 years). "
                f"Got {self.retention_days}. Set a shorter retention period."
            )
        hours = self.pending_probe_hours
        if isinstance(hours, bool) or not isinstance(hours, int | float) or not 0 <= hours <= 720:
            raise InvalidParameter(
                "The 'pending_probe_hours' setting must be a number of hours in [0, 720]. "
                f"Got {hours!r} instead."
            )
        if self.duplicate_policy not in ("warn", "refuse"):
            raise InvalidParameter(
                "The 'duplicate_policy' setting must be 'warn' or 'refuse'. "
                f"Got {self.duplicate_policy!r} instead."
            )
        if self.index_kind not in INDEX_KINDS:
            raise InvalidParameter(
                f"The 'index_kind' setting must be one of {', '.join(INDEX_KINDS)}. "
                f"Got {self.index_kind!r} instead."
            )
        exact_below = self.index_exact_below
        if isinstance(exact_below, bool) or not isinstance(exact_below, int) or exact_below < 0:
            raise InvalidParameter(
                f"The 'index_exact_below' setting must be an int >= 0. Got {exact_below!r}."
            )

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str], **overrides: Any) -> GalleryConfig:
        """The default layout of a gallery in ``folder`` (what ``facetrust init`` makes)."""
        base = Path(folder)
        values: dict[str, Any] = {
            "db_path": base / "gallery.db",
            "keystore_path": base / "gallery-keys.db",
            "key_file": base / "gallery.key",
            "index_dir": base / "index",
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "purposes" in values:
            values["purposes"] = tuple(values["purposes"])
        return cls(**values)

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        def show(path: Path | None) -> str | None:
            if path is None:
                return None
            if relative_to is not None and path.parent.resolve() == relative_to.resolve():
                return path.name
            return str(path)

        return {
            "db_path": show(self.db_path),
            "keystore_path": show(self.keystore_path),
            "key_file": show(self.key_file),
            "purposes": list(self.purposes),
            "retention_days": self.retention_days,
            "review_quorum": self.review_quorum,
            "searcher_may_review": self.searcher_may_review,
            "pending_probe_hours": self.pending_probe_hours,
            "duplicate_policy": self.duplicate_policy,
            "operating_point": self.operating_point,
            "database_url": self.database_url,
            "keystore_url": self.keystore_url,
            "server_side_search": self.server_side_search,
            "index_kind": self.index_kind,
            "index_exact_below": self.index_exact_below,
            "index_dir": show(self.index_dir),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as JSON (paths relative to its folder when inside it)."""
        target = Path(path)
        text = json.dumps(self.to_dict(relative_to=target.parent), indent=2)
        target.write_text(text + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GalleryConfig:
        """Read a config file written by :meth:`save`.

        Raises
        ------
        StoreError
            The file is missing, unreadable, or not one JSON object.
        InvalidParameter
            A setting in it has a value of the wrong kind or out of range (the
            message names the file and the setting).
        """
        target = Path(path)
        try:
            raw = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(
                f"No gallery config at {str(target)!r}. Run `facetrust init` in the gallery's "
                f"folder, or point --gallery / {GALLERY_ENV} at an existing gallery."
            ) from None
        except (OSError, ValueError) as error:
            raise StoreError(f"Cannot read the gallery config {str(target)!r}: {error}.") from None
        if not isinstance(raw, dict):
            raise StoreError(
                f"The gallery config {str(target)!r} must hold one JSON object of settings "
                f"(as `facetrust init` writes it). Got {json.dumps(raw)[:60]} instead: fix "
                "the file, or recreate it with `facetrust init`."
            )
        base = target.parent

        def malformed(name: str, expected: str) -> InvalidParameter:
            return InvalidParameter(
                f"The '{name}' setting of the gallery config {str(target)!r} must be "
                f"{expected}. Got {raw[name]!r} instead: fix the file."
            )

        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in raw.items() if k in known}
        missing = [name for name in ("db_path", "keystore_path") if name not in values]
        if missing:
            raise InvalidParameter(
                f"The gallery config {str(target)!r} lacks the "
                + " and ".join(f"'{name}'" for name in missing)
                + f" setting{'s' if len(missing) > 1 else ''}: fix the file, or recreate it "
                "with `facetrust init`."
            )
        for name in ("db_path", "keystore_path", "key_file", "index_dir"):
            if name in values:
                if values[name] is not None and not isinstance(values[name], str):
                    raise malformed(name, "a path (a string)")
                values[name] = None if values[name] is None else base / values[name]
        for name in ("searcher_may_review", "server_side_search"):
            if name in values and not isinstance(values[name], bool):
                raise malformed(name, "true or false")
        for name in ("operating_point", "database_url", "keystore_url"):
            if values.get(name) is not None and not isinstance(values[name], str):
                raise malformed(name, "a string or null")
        if "purposes" in values:
            purposes = values["purposes"]
            if not isinstance(purposes, list) or not all(isinstance(p, str) for p in purposes):
                raise malformed("purposes", 'a list of purpose names, e.g. ["boarding"]')
            values["purposes"] = tuple(purposes)
        try:
            return cls(**values)
        except InvalidParameter as error:
            raise InvalidParameter(
                f"The gallery config {str(target)!r} is not valid: {error} Fix the file."
            ) from None


def operating_point_of(
    gallery: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The operating point the gallery :func:`find_config` finds decides at.

    ``None`` (the table's default) when the gallery's config names none, or when
    no gallery is named (``gallery`` or ``FACETRUST_GALLERY``) and the current
    folder holds none: what an evaluation measures at by default, so that it
    measures the threshold the gallery's users get.

    Raises
    ------
    StoreError, InvalidParameter
        A gallery is named but its config is missing or unreadable.
    """
    environ = os.environ if environ is None else environ
    path = find_config(gallery, environ)
    if gallery is None and not environ.get(GALLERY_ENV) and not path.exists():
        return None
    return GalleryConfig.load(path).operating_point


def find_config(
    gallery: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The config file to use: ``gallery`` > ``FACETRUST_GALLERY`` > ``./facetrust-gallery.json``.

    ``gallery`` (or the variable) may name the config file or the folder holding it.
    """
    environ = os.environ if environ is None else environ
    chosen = gallery if gallery is not None else environ.get(GALLERY_ENV) or "."
    path = Path(chosen)
    return path / CONFIG_NAME if path.is_dir() else path
