"""Settings of the REST service, read once into a frozen object.

Precedence: explicit argument > ``facetrust serve`` flag > ``FACETRUST_SERVICE_*``
environment variable > default (e.g. ``FACETRUST_SERVICE_MAX_BODY_BYTES``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Settings, is_positive, parse_setting
from ..errors import InvalidParameter

ENV_PREFIX = "FACETRUST_SERVICE_"


@dataclass(frozen=True)
class ServiceSettings:
    """Where the service's data is and the limits it enforces.

    Attributes
    ----------
    gallery : str or None
        The gallery's config file or folder (``None``: ``FACETRUST_GALLERY``,
        else the current folder).
    api_keys_path : str or None
        The API key file; ``api-keys.db`` beside the gallery database by default.
    api_keys_url : str or None
        A PostgreSQL URL for the service database (API keys, console sessions,
        shared rate limits; see :mod:`facetrust.service.service_db`). For a
        PostgreSQL gallery it defaults to the gallery's own database, so every
        replica shares them.
    reports_dir : str or None
        Folder of evaluation reports (``*.json``, ``*.html``) served read-only
        to auditors; ``reports/`` beside the gallery database by default.
    max_body_bytes : int
        Largest request body, in bytes; larger ones are refused with 413
        before they are read in full. Also the largest image, unless the
        library's ``FACETRUST_MAX_BYTES`` is lower (:meth:`image_settings`).
    max_pixels : int
        Largest image, in pixels (width x height), checked from its header
        before decoding, unless the library's ``FACETRUST_MAX_PIXELS`` is
        lower (:meth:`image_settings`).
    identify_per_minute : float
        Sustained identification requests per minute allowed to one key.
    identify_burst : int
        Identification requests one key may make at once before the rate applies.
    request_timeout_s : float
        Longest a request may take before the service answers 503.
    secure_cookies : bool
        Mark the console's cookie ``Secure`` (set it whenever the service is
        reached over HTTPS, i.e. anywhere but loopback).
    auth_failures_per_minute : float
        Failed authentications (API or console log-in) per minute that one
        client address may sustain before unverified keys from it are
        answered 429.
    auth_failure_burst : int
        Failed authentications one client address or key id may make at once.
    console_idle_minutes : float
        A console session unused this long has ended.
    console_session_hours : float
        A console session ends this long after log-in, used or not.
    """

    gallery: str | None = None
    api_keys_path: str | None = None
    api_keys_url: str | None = None
    reports_dir: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000
    identify_per_minute: float = 120.0
    identify_burst: int = 20
    request_timeout_s: float = 30.0
    secure_cookies: bool = False
    auth_failures_per_minute: float = 10.0
    auth_failure_burst: int = 10
    console_idle_minutes: float = 30.0
    console_session_hours: float = 8.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "identify_per_minute", "identify_burst",
                     "request_timeout_s", "auth_failures_per_minute", "auth_failure_burst",
                     "console_idle_minutes", "console_session_hours"):
            value = getattr(self, name)
            if not is_positive(value):
                raise InvalidParameter(
                    f"The '{name}' service setting must be a positive number. Got {value} instead."
                )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> ServiceSettings:
        """Settings from ``FACETRUST_SERVICE_*`` variables, then non-None ``overrides``."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                kind = str(field.type).replace(" | None", "")
                values[field.name] = parse_setting(ENV_PREFIX + field.name.upper(), kind, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def image_settings(self, library: Settings | None = None) -> Settings:
        """The pipeline settings the service reads photos with: ``library``'s
        (``FACETRUST_*``, by default) with the image caps lowered to
        ``max_pixels`` and ``max_body_bytes`` where those are stricter
        (:meth:`Settings.capped`): the lower of the two limits wins."""
        library = library or Settings.from_env()
        return library.capped(max_pixels=self.max_pixels, max_bytes=self.max_body_bytes)

    def api_keys_file(self, gallery_db: Path) -> Path:
        """The API key file to use for a gallery whose database is ``gallery_db``."""
        return Path(self.api_keys_path) if self.api_keys_path else gallery_db.parent / "api-keys.db"

    def service_database(self, gallery_db: Path, gallery_url: str | None) -> str:
        """Where the service keeps keys, sessions and limits (a URL or a SQLite path).

        ``api_keys_url``, else ``api_keys_path``, else the PostgreSQL gallery's
        database ``gallery_url``, else ``api-keys.db`` beside ``gallery_db``.
        """
        if self.api_keys_url:
            return self.api_keys_url
        if self.api_keys_path or not gallery_url:
            return str(self.api_keys_file(gallery_db))
        return gallery_url

    def reports_folder(self, gallery_db: Path) -> Path:
        """The evaluation report folder for a gallery whose database is ``gallery_db``."""
        return Path(self.reports_dir) if self.reports_dir else gallery_db.parent / "reports"
