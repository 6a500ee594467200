"""The REST service and web console: ``create_app(settings) -> FastAPI``.

Run it with ``facetrust serve``. Importing this package needs the service
dependencies (FastAPI, uvicorn, Jinja2, argon2-cffi, python-multipart); the
rest of facetrust does not import it.
"""

from .apikeys import ApiKey, ApiKeys, CreatedKey, Role, SqlApiKeyStore, SqliteApiKeyStore
from .app import create_app, open_gallery
from .permissions import PERMISSIONS, PUBLIC, permits
from .settings import ServiceSettings

__all__ = [
    "PERMISSIONS",
    "PUBLIC",
    "ApiKey",
    "ApiKeys",
    "CreatedKey",
    "Role",
    "ServiceSettings",
    "SqlApiKeyStore",
    "SqliteApiKeyStore",
    "create_app",
    "open_gallery",
    "permits",
]
