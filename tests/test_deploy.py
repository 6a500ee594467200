"""The deployment in ``deploy/``: nginx with TLS in front of two replicas, and the systemd units.

``deploy/smoke.sh`` starts what the deployment guide describes (the site file
``deploy/nginx/facetrust.conf`` with a throw-away certificate, two
``facetrust serve`` replicas over one PostgreSQL gallery) and checks health,
the HTTPS redirect, enrolment, identification answered by both replicas and
the audit chain, all through nginx. The systemd units are checked by
``systemd-analyze verify`` (a misspelt sandboxing setting is otherwise ignored
silently).
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


UNITS = REPO / "deploy" / "systemd"
#: Where the units expect facetrust installed (deploy/systemd's header): absent here.
INSTALLED_AT = "/opt/facetrust/venv/bin/facetrust"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="needs systemd-analyze (Debian: apt-get install systemd)")
def test_the_systemd_units_have_no_unknown_or_invalid_settings(tmp_path: Path) -> None:
    instances = []
    for unit in sorted(UNITS.glob("*@.service")):
        instance = tmp_path / unit.name.replace("@.", "@8001.")
        instance.write_text(unit.read_text())
        instances.append(str(instance))
    assert len(instances) == 2
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *instances],
        capture_output=True, text=True, timeout=60, check=False,
    )
    complaints = [
        line for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and f"{INSTALLED_AT} is not executable" not in line
    ]
    assert complaints == []
