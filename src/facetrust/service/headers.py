"""The headers every answer carries: kept by no cache, sniffed, framed or referred.

Nearly every answer of the service holds personal or biometric data (candidate
lists, review cases and their photos, subjects and consents, audit events and
exports, evaluation reports), and its errors name subjects and cases too. So
:class:`PrivacyHeaders`, the app's outermost middleware, gives every HTTP
answer, of the API and the console alike, success or error, redirect or 500:

- ``Cache-Control: no-store``, so no browser, shared proxy or back-forward
  cache keeps a copy (only the console's own scripts and style sheets under
  ``/console/static/`` are ``no-cache``: they hold no personal data);
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``
  (console addresses hold subject and identification ids);
- a Content-Security-Policy without ``'unsafe-inline'``, with
  ``frame-ancestors 'none'`` (and ``X-Frame-Options: DENY`` for old browsers):
  :data:`CONSOLE_CSP` under ``/console``, :data:`API_CSP` elsewhere.

An answer that sets its own Content-Security-Policy keeps it (the console
serves a non-JSON evaluation report with ``sandbox``); ``Cache-Control`` is
always the one above. One place for all of it, so a new route cannot forget.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "API_CSP", "CONSOLE_CSP", "STATIC_PREFIX", "PrivacyHeaders", "is_console_path",
    "privacy_headers",
]

#: Console pages: their own style sheets, scripts and images (and ``data:`` previews).
CONSOLE_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
#: API answers (JSON, photos, reports): a browser that opens one runs and loads nothing.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox"

#: The console's own scripts and style sheets: no personal data, may be revalidated.
STATIC_PREFIX = "/console/static/"


def is_console_path(path: str) -> bool:
    """Whether ``path`` is the console's (``/console`` or below it)."""
    return path == "/console" or path.startswith("/console/")


def privacy_headers(path: str) -> Mapping[str, str]:
    """The headers an answer to a request for ``path`` carries (see the module docstring)."""
    return {
        "Cache-Control": "no-cache" if path.startswith(STATIC_PREFIX) else "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": CONSOLE_CSP if is_console_path(path) else API_CSP,
    }


class PrivacyHeaders:
    """Add :func:`privacy_headers` to every HTTP answer (add it outermost)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = privacy_headers(scope.get("path", ""))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    if name == "Cache-Control":
                        headers[name] = value
                    else:
                        headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)
