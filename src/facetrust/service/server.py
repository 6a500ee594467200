"""Running the service: uvicorn on a host and port, one or several processes."""

from __future__ import annotations

import dataclasses
import getpass
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from ..config import ENV_PREFIX as SETTINGS_ENV_PREFIX
from ..config import cores_per_process
from ..gallery import Gallery, GalleryConfig, find_config
from ..gallery.backends import database_url
from .apikeys import ApiKeys, SqlApiKeyStore
from .protocol import BoundedHttpToolsProtocol
from .service_db import open_service_database
from .settings import ENV_PREFIX, ServiceSettings


def api_keys_for(settings: ServiceSettings) -> ApiKeys:
    """The API keys of the gallery ``settings`` name (its key file is created if missing).

    Opening them needs the gallery's master key: key rows are sealed with a key
    derived from it (see :mod:`.apikeys`). Creating, sealing and revoking a key
    through them is written to the gallery's audit log (``apikey.create``,
    ``apikey.seal``, ``apikey.revoke``), as the service does for its admins.
    """
    config = GalleryConfig.load(find_config(settings.gallery))

    def audit(kind: str, *, actor: str | None, **fields: Any) -> None:
        with Gallery.open(config) as gallery:
            gallery.audit.append(kind, actor=actor or f"cli:{getpass.getuser()}", **fields)

    target = settings.service_database(Path(config.db_path), database_url(config))
    with Gallery.open(config) as gallery:
        store = SqlApiKeyStore(open_service_database(target), owns_database=True)
        return ApiKeys.for_gallery(gallery, store, audit=audit)


def require_sealed_keys(settings: ServiceSettings, gallery: Gallery) -> None:
    """Refuse to serve ``gallery`` while its service database holds an active key
    row made before rows were sealed (see :meth:`ApiKeys.require_sealed`)."""
    from .app import open_service_database_of

    store = SqlApiKeyStore(open_service_database_of(settings, gallery), owns_database=True)
    try:
        ApiKeys.for_gallery(gallery, store).require_sealed()
    finally:
        store.close()


def share_cores(workers: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """Give each of ``workers`` processes its share of the cores for the face models.

    ONNX Runtime otherwise starts one thread per core in every process, and the
    processes then contend for the cores. An explicit (non-zero)
    ``FACETRUST_EMBEDDER_THREADS`` is kept.
    """
    variable = f"{SETTINGS_ENV_PREFIX}EMBEDDER_THREADS"
    if environ.get(variable, "0").strip() in ("", "0"):
        environ[variable] = str(cores_per_process(workers))


def serve(settings: ServiceSettings, *, host: str, port: int, workers: int = 1) -> None:
    """Serve the API and console with uvicorn until interrupted.

    Headers are capped in size and time before the app sees a request (see
    :mod:`.protocol`).

    With ``workers > 1`` each process opens the gallery itself (the settings
    travel as ``FACETRUST_SERVICE_*`` variables); the processes share one set
    of rate limits through the service database (see :mod:`.buckets`), and,
    unless ``FACETRUST_EMBEDDER_THREADS`` says otherwise, the cores: each runs
    the face models on ``cores // workers`` threads (at least one).
    """
    import uvicorn

    from .app import create_app, open_gallery

    # Open the gallery here, so a missing gallery or master key, or unsealed API
    # key rows, is one clear error line (facetrust's CLI) rather than a traceback
    # from a worker.
    gallery = open_gallery(settings)
    try:
        require_sealed_keys(settings, gallery)
    except BaseException:
        gallery.close()
        raise
    if workers <= 1:
        with gallery:
            uvicorn.run(create_app(settings, gallery=gallery), host=host, port=port,
                        log_level="info", http=BoundedHttpToolsProtocol)
        return
    gallery.close()
    share_cores(workers)
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is not None:
            os.environ[ENV_PREFIX + field.name.upper()] = str(value)
    uvicorn.run(
        "facetrust.service.app:create_app", factory=True, host=host, port=port,
        workers=workers, log_level="info", http=BoundedHttpToolsProtocol,
    )
