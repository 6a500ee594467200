"""The web console: server-rendered pages over the same library calls as the API.

Log in with an API key; it is kept in an HttpOnly, SameSite=Strict session
cookie scoped to ``/console`` (``Secure`` when ``secure_cookies`` is set or the
request came over HTTPS).
Every form carries a CSRF token bound to the session. Each page checks the
same permission table as the API, and the navigation shows only the pages
the key's role may use.

Modules, one job each:

- ``csrf``: CSRF tokens bound to the session cookie.
- ``rendering``: templates, the menu table, error panels.
- ``errors``: every error under ``/console`` as a page in the layout, not problem+json.
- ``access``: the session's key, and the guard every page runs first.
- ``previews``: inline ``data:`` image previews of uploads and face chips.
- ``routes_session``: log in, log out, home.
- ``routes_enrolment``: consent and enrolment (enroller).
- ``routes_subjects``: find subjects, a subject's page, withdraw, erase, verify against one.
- ``routes_search``: verify and identify (operator).
- ``routes_reviews``: the review queue and review pages, with their photos (operator).
- ``routes_audit``: audit trail and evaluation reports (auditor).
- ``routes_admin``: API keys and the retention sweep (admin).
- ``routes_static``: the console's own scripts and style sheets (``static/``), allowed by
  the CSP.
"""

from __future__ import annotations

from fastapi import APIRouter

from . import (
    routes_admin,
    routes_audit,
    routes_enrolment,
    routes_reviews,
    routes_search,
    routes_session,
    routes_static,
    routes_subjects,
)
from .errors import ConsoleErrorPages, install_error_pages
from .rendering import PAGES

__all__ = ["PAGES", "ConsoleErrorPages", "install_error_pages", "router"]

router = APIRouter(include_in_schema=False)  # each page router has the /console prefix
router.include_router(routes_session.router)
router.include_router(routes_enrolment.router)
router.include_router(routes_subjects.router)
router.include_router(routes_search.router)
router.include_router(routes_reviews.router)
router.include_router(routes_audit.router)
router.include_router(routes_admin.router)
router.include_router(routes_static.router)
