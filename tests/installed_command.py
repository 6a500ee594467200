"""The installed ``facetrust`` command of this environment, run as a user's shell would."""

from __future__ import annotations

import os
import sys
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
