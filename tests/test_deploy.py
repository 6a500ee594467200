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
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from installed_command import INSTALLED, shell_env

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
    done = subprocess.run(
        ["bash", str(REPO / "deploy" / "smoke.sh")], cwd=REPO,
        env=shell_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for check in ("plain HTTP is redirected to HTTPS", "identify #4 finds the enrolled subject",
                  "the audit chain verifies", "every replica served identifies",
                  "a candidate list reaches the client with Cache-Control: no-store",
                  "nginx's access log holds no path, subject id or case reference"):
        assert f"ok   {check}" in out, out
    assert "smoke test passed" in out


UNITS = REPO / "deploy" / "systemd"
#: Where the units expect facetrust installed (deploy/systemd's header): absent here.
INSTALLED_AT = "/opt/facetrust/venv/bin/facetrust"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="needs systemd-analyze (Debian: apt-get install systemd)")
def test_the_systemd_units_have_no_unknown_or_invalid_settings(tmp_path: Path) -> None:
    instances = []
    for unit in sorted([*UNITS.glob("*.service"), *UNITS.glob("*.timer")]):
        instance = tmp_path / unit.name.replace("@.", "@8001.")
        instance.write_text(unit.read_text())
        instances.append(str(instance))
    assert len(instances) == 4
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *instances],
        capture_output=True, text=True, timeout=60, check=False,
    )
    complaints = [
        line for line in (done.stdout + done.stderr).splitlines()
        if line.strip() and f"{INSTALLED_AT} is not executable" not in line
    ]
    assert complaints == []


def test_the_retention_unit_deletes_probes_and_crops_past_their_time(
    tmp_path: Path, photos: dict[str, list[Path]]
) -> None:
    """The hourly unit's own commands (its ExecStart lines, run with this checkout's
    facetrust): a probe kept for review and a gate crop, both past their deadline,
    are deleted and the deletions audited under the unit's actor."""
    from datetime import timedelta

    from facetrust.gallery import Gallery
    from facetrust.gate import decisions, events

    name, *_ = sorted(photos)
    gallery, _ = Gallery.init_folder(tmp_path, pending_probe_hours=0.0003)  # about a second
    with gallery:
        now = gallery.now()
        gallery.add_subject(name, actor="registrar")
        gallery.grant_consent(name, ["boarding"], expires_at=now + timedelta(days=1),
                              evidence_ref="form-1", evidence_sha256="ab" * 32,
                              notice_version="v1", actor="registrar")
        gallery.enroll(name, [photos[name][0]], actor="registrar")
        found = gallery.identify(photos[name][1], purpose="boarding", actor="officer",
                                 case_ref="DESK-1")
        assert gallery.store.get_pending_probe(found.identification_id) is not None
        events.open_event(gallery, "flight-1", purpose="boarding", actor="agent",
                          valid_from=now - timedelta(minutes=1), valid_to=now + timedelta(hours=1))
        events.add_member(gallery, "flight-1", name, actor="agent")
        probe = gallery.pipeline.embed_one(photos[name][1]).embedding
        decision = decisions.match_at_gate(gallery, "flight-1", probe, gate_id="B1", actor="gate",
                                           crop_jpeg=b"crop", keep_crop_hours=0.0003)
        assert decision.outcome == "match" and len(gallery.store.probe_crops()) == 1
    time.sleep(1.5)
    unit = (UNITS / "facetrust-retention.service").read_text()
    commands = [shlex.split(line.split("=", 1)[1]) for line in unit.splitlines()
                if line.startswith("ExecStart=")]
    assert [c[0] for c in commands] == [INSTALLED_AT, INSTALLED_AT]
    for command in commands:
        done = subprocess.run([INSTALLED, *command[1:]], env=shell_env(tmp_path),
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    with Gallery.find(tmp_path) as swept:
        assert swept.store.get_pending_probe(found.identification_id) is None
        assert swept.store.probe_crops() == []
        kinds = [e.kind for e in swept.audit.events(actor="system:retention")]
        assert kinds == ["pending-probe.deleted", "retention.sweep", "gate.crop-sweep"], kinds
        assert swept.audit.verify().ok
