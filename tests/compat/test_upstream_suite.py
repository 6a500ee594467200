"""face_recognition's own test suite, run against the shim when it is available locally.

Set ``FACE_RECOGNITION_TESTS`` to the path of ``tests/test_face_recognition.py``
from face_recognition's repository or its sdist (``pip download --no-deps
--no-binary :all: face_recognition==1.3.0``), with its ``test_images`` folder
beside it. The file is copied to a temporary folder with only its three
``from face_recognition import ...`` lines pointed at
``facetrust.compat.face_recognition``, and run there by pytest in a child
process; its 30 tests must all pass. Without the variable this test is skipped:
the tests beside it check the same behaviour on the same images.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

UPSTREAM_IMPORT = re.compile(r"^from face_recognition import (\w+)$", flags=re.MULTILINE)


def point_imports_at_shim(source: str) -> str:
    """``source`` with each ``from face_recognition import X`` line importing from the shim."""
    pointed, count = UPSTREAM_IMPORT.subn(
        r"from facetrust.compat.face_recognition import \1", source
    )
    if count != 3:
        raise AssertionError(f"Expected face_recognition's 3 import lines, found {count}.")
    return pointed


def test_point_imports_at_shim_changes_only_the_import_lines() -> None:
    source = "import os\nfrom face_recognition import api\nfrom face_recognition import a_cli\n"
    source += "from face_recognition import b_cli\nx = 'from face_recognition import api'\n"
    pointed = point_imports_at_shim(source)
    assert pointed.splitlines()[1:4] == [
        "from facetrust.compat.face_recognition import api",
        "from facetrust.compat.face_recognition import a_cli",
        "from facetrust.compat.face_recognition import b_cli",
    ]
    assert pointed.splitlines()[0] == "import os"
    assert pointed.splitlines()[4] == source.splitlines()[4]


@pytest.mark.slow
def test_face_recognition_suite_passes_against_the_shim(tmp_path: Path) -> None:
    upstream = os.environ.get("FACE_RECOGNITION_TESTS")
    if not upstream:
        pytest.skip(
            "Set FACE_RECOGNITION_TESTS to face_recognition's tests/test_face_recognition.py"
        )
    test_file = Path(upstream)
    (tmp_path / "test_images").symlink_to(test_file.parent / "test_images")
    target = tmp_path / "test_face_recognition.py"
    target.write_text(point_imports_at_shim(test_file.read_text()))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "30 passed" in result.stdout, result.stdout[-2000:]
