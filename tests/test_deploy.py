"""The deployment in ``deploy/``: nginx with TLS in front of two replicas, through its smoke script.

``deploy/smoke.sh`` starts what the deployment guide describes (the site file
``deploy/nginx/facetrust.conf`` with a throw-away certificate, two
``facetrust serve`` replicas over one PostgreSQL gallery) and checks health,
the HTTPS redirect, enrolment, identification answered by both replicas and
the audit chain, all through nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NEEDED = ("nginx", "openssl", "curl")

pytestmark = pytest.mark.slow


def missing_tools() -> list[str]:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    return [tool for tool in NEEDED if shutil.which(tool, path=path) is None]


@pytest.mark.skipif(bool(missing_tools()), reason=(
    f"needs {', '.join(missing_tools())} (Debian: apt-get install nginx-light openssl curl)"
))
def test_nginx_with_tls_in_front_of_two_replicas_passes_the_smoke_checks() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRUST_")}
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "smoke.sh")], cwd=REPO,
        env={**env, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for check in ("plain HTTP is redirected to HTTPS", "identify #4 finds the enrolled subject",
                  "the audit chain verifies", "every replica served identifies"):
        assert f"ok   {check}" in out, out
    assert "smoke test passed" in out
