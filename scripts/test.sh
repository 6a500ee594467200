#!/usr/bin/env bash
# Set up a virtual environment (if needed) and run every check CI runs:
# ruff, mypy on the library, the documentation site built with --strict (no
# warning allowed; the built site goes to a temporary folder, never committed)
# and the whole pytest suite on real photos.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# The console's browser tests drive Debian's chromium through Playwright (never
# Playwright's own browser download); install it when it is missing.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
    else
        echo "warning: /usr/bin/chromium is missing; run 'sudo apt-get install chromium'" >&2
    fi
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
# Not --quiet: it hides the warnings --strict must count.
docs_site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$docs_site"
rm -rf "$docs_site"
.venv/bin/python -m pytest "$@"
