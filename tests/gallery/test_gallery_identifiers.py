"""One grammar for subject ids and one rule for display names, enforced in the library,
so the CLI, the REST service and the console refuse the same input with the same message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facetrust.errors import InvalidParameter
from facetrust.gallery import Gallery
from gallery_fixtures import BAD_IDS, GOOD_IDS


@pytest.mark.parametrize("subject_id", BAD_IDS)
def test_ids_outside_the_grammar_are_refused(sample_gallery: Gallery, subject_id: str) -> None:
    with pytest.raises(InvalidParameter, match="letters A-Z and a-z, digits, '.', '_' and '-'"):
        sample_gallery.add_subject(subject_id, actor="registrar")
    assert subject_id not in {s.subject_id for s in sample_gallery.list_subjects()}


@pytest.mark.parametrize("subject_id", GOOD_IDS)
def test_ids_inside_the_grammar_are_kept_as_given(sample_gallery: Gallery, subject_id: str) -> None:
    assert sample_gallery.add_subject(subject_id, actor="registrar").subject_id == subject_id


def test_display_names_are_nfc_without_hidden_characters(sample_gallery: Gallery) -> None:
    named = sample_gallery.add_subject("jose", display_name="  Jose\u0301 M.  ", actor="desk")
    assert named.display_name == "Jos\u00e9 M."
    for hidden in ("Kofi\u202eA", "Kofi\nAnnan", "Kofi\x00", "Kofi\u200b"):
        with pytest.raises(InvalidParameter, match="control or invisible formatting"):
            sample_gallery.add_subject("kofi2", display_name=hidden, actor="desk")
    assert "kofi2" not in {s.subject_id for s in sample_gallery.list_subjects()}


@pytest.mark.slow  # runs the installed command in subprocesses
def test_the_installed_command_refuses_the_same_ids(tmp_path: Path) -> None:
    gallery, _ = Gallery.init_folder(tmp_path)
    gallery.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRUST_")}
    env["FACETRUST_GALLERY"] = str(tmp_path)
    command = str(Path(sys.executable).parent / "facetrust")
    for subject_id in ("a/b", "../x", "evil\u202egpj"):
        done = subprocess.run(
            [command, "subject", "add", subject_id], capture_output=True, text=True,
            env=env, check=False,
        )
        assert done.returncode == 2
        assert "letters A-Z and a-z, digits" in done.stderr and "Traceback" not in done.stderr
    ok = subprocess.run(
        [command, "subject", "add", "kofi", "--name", "Kofi\u202eA"], capture_output=True,
        text=True, env=env, check=False,
    )
    assert ok.returncode == 2 and "U+202E" in ok.stderr
