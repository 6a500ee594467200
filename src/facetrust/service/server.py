"""Running the service: uvicorn on a host and port, one or several processes."""

from __future__ import annotations

import dataclasses
import getpass
import os
from pathlib import Path
from typing import Any

from ..gallery import Gallery, GalleryConfig, find_config
from ..gallery.backends import database_url
from .apikeys import ApiKeys, SqlApiKeyStore
from .service_db import open_service_database
from .settings import ENV_PREFIX, ServiceSettings


def api_keys_for(settings: ServiceSettings) -> ApiKeys:
    """The API keys of the gallery ``settings`` name (its key file is created if missing).

    Creating and revoking a key through them is written to the gallery's audit
    log (``apikey.create``, ``apikey.revoke``), as the service does for its admins.
    """
    config = GalleryConfig.load(find_config(settings.gallery))

    def audit(kind: str, *, actor: str | None, **fields: Any) -> None:
        with Gallery.open(config) as gallery:
            gallery.audit.append(kind, actor=actor or f"cli:{getpass.getuser()}", **fields)

    target = settings.service_database(Path(config.db_path), database_url(config))
    return ApiKeys(SqlApiKeyStore(open_service_database(target), owns_database=True), audit=audit)


def serve(settings: ServiceSettings, *, host: str, port: int, workers: int = 1) -> None:
    """Serve the API and console with uvicorn until interrupted.

    With ``workers > 1`` each process opens the gallery itself (the settings
    travel as ``FACETRUST_SERVICE_*`` variables); the processes share one set
    of rate limits through the service database (see :mod:`.buckets`).
    """
    import uvicorn

    from .app import create_app, open_gallery

    # Open the gallery here, so a missing gallery or master key is one clear
    # error line (facetrust's CLI) rather than a traceback from a worker.
    gallery = open_gallery(settings)
    if workers <= 1:
        with gallery:
            uvicorn.run(create_app(settings, gallery=gallery), host=host, port=port,
                        log_level="info")
        return
    gallery.close()
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is not None:
            os.environ[ENV_PREFIX + field.name.upper()] = str(value)
    uvicorn.run(
        "facetrust.service.app:create_app", factory=True, host=host, port=port,
        workers=workers, log_level="info",
    )
