"""The installed ``facetrust`` command of this environment, run as a user's shell would,
and a process killed mid-operation (:func:`kill_when_paused`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: The installed ``facetrust`` command of this environment.
INSTALLED = str(Path(sys.executable).parent / "facetrust")


def shell_env(gallery_folder: Path | None = None, **settings: str) -> dict[str, str]:
    """This environment without the ``FACETRUST_*`` settings of the test run, with
    ``FACETRUST_GALLERY`` naming ``gallery_folder`` when given, and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRUST_")}
    if gallery_folder is not None:
        env["FACETRUST_GALLERY"] = str(gallery_folder)
    return {**env, **settings}


def installed_runner(
    gallery_folder: Path | None = None, *, cwd: Path | None = None, **settings: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``facetrust(*args, code=0, input_text=None)``: run the installed command in
    :func:`shell_env` (``input_text`` on its stdin; in the folder ``cwd`` when given),
    check its exit status is ``code`` and that it printed no traceback."""
    env = shell_env(gallery_folder, **settings)

    def facetrust(
        *args: str, code: int = 0, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([INSTALLED, *args], capture_output=True, text=True, check=False,
                              env=env, input=input_text, cwd=cwd)
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done

    return facetrust


def kill_when_paused(script: str, args: list[str], flag: Path) -> None:
    """Run ``script`` (given ``flag`` after its first argument) in another process and
    SIGKILL it once it has written ``flag``: it waits there, mid-operation."""
    victim = subprocess.Popen([sys.executable, "-c", script, args[0], str(flag), *args[1:]],
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        assert time.monotonic() < deadline, "the process never reached its pause"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
