"""The saved index file is a cache: an index folder that cannot be written costs a line of
warning, never a search, `index info` or an erasure; `facetrust index save` reports it as
a one-line error. Through the installed command, on a gallery searched with the quantized
index (built from 4 templates, ``index_exact_below=4``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.gallery.index_file import index_path
from installed_command import installed_runner


def _set_index_dir(gallery_dir: Path, index_dir: str) -> None:
    config_file = gallery_dir / "facetrust-gallery.json"
    config = json.loads(config_file.read_text())
    config.update(index_kind="quantized", index_exact_below=4, index_dir=index_dir)
    config_file.write_text(json.dumps(config))


def test_an_index_folder_that_cannot_be_written_never_stops_a_search(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
) -> None:
    gallery_dir = tmp_path / "g"
    facetrust = installed_runner(gallery_dir)
    facetrust("init", str(gallery_dir))
    with Gallery.find(gallery_dir) as gallery:
        enrol_all(gallery, identities, embeddings)  # 20 templates, for boarding
    probe = identities["Kofi_Annan"][3]

    # a file where the index folder should be: it cannot be created
    _set_index_dir(gallery_dir, "gallery.key")
    info = facetrust("index", "info")
    (model_id, held), = json.loads(info.stdout).items()
    assert held["templates"] == 20 and held["kind"] == "quantized"
    warned = [line for line in info.stderr.splitlines() if "was not saved in" in line]
    assert len(warned) == 1 and "searches use the index in memory" in warned[0]
    found = facetrust("identify", str(probe), "--purpose", "boarding", "--case-ref", "t",
                      "--actor", "officer")
    assert json.loads(found.stdout)["candidates"][0]["subject_id"] == "Kofi_Annan"
    saved = facetrust("index", "save", code=2)
    errors = [line for line in saved.stderr.splitlines() if "index" in line.lower()]
    assert errors == [line for line in errors if line.startswith("error: Cannot write")]
    assert len(errors) == 1

    # a directory where the index file should be: it cannot be replaced, nor deleted
    _set_index_dir(gallery_dir, "index")
    index_path(gallery_dir / "index", model_id).mkdir(parents=True)
    found = facetrust("identify", str(probe), "--purpose", "boarding", "--case-ref", "t",
                      "--actor", "officer")
    assert json.loads(found.stdout)["candidates"][0]["subject_id"] == "Kofi_Annan"
    assert "was not saved in" in found.stderr
    facetrust("forget", "Kofi_Annan", "--actor", "dpo")
    gone = facetrust("identify", str(probe), "--purpose", "boarding", "--case-ref", "t",
                     "--actor", "officer", code=1)
    assert "Kofi_Annan" not in gone.stdout
