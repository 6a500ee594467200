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
# Debian packages the tests run: chromium for the console's browser tests
# (through Playwright, never Playwright's own browser download), and nginx,
# openssl and curl for the deployment's smoke test (deploy/smoke.sh).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    else
        echo "warning: missing ${missing[*]}; run 'sudo apt-get install ${missing[*]}'" >&2
    fi
fi
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
# Not --quiet: it hides the warnings --strict must count.
docs_site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$docs_site"
rm -rf "$docs_site"
.venv/bin/python -m pytest "$@"
