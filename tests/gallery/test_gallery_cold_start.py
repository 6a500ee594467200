"""Cold start from the sealed index file: a file written from committed store state is
brought up to date from the store's change log (no template it holds is decrypted); a
stale file is detected and never trusted; an erased subject never comes back.

The sample's 20 templates are searched through the quantized index
(``index_exact_below=4``), which is saved to the gallery's index folder.
"""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facetrust import crypto
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, index_file
from facetrust.gallery.indexes import bulk_reading

FakeClock = Any
APPROXIMATE = {"index_exact_below": 4}


def found(gallery: Gallery, probe: Embedding) -> list[str]:
    result = gallery.identify(probe, purpose="boarding", actor="officer", k=10, case_ref="CASE-1")
    return [c.subject_id for c in result.candidates]


def info(gallery: Gallery, probe: Embedding) -> dict[str, Any]:
    return gallery.index_info()[probe.model_id]


def test_a_committed_file_is_brought_up_to_date_from_the_change_log(
    make_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
) -> None:
    gallery = make_gallery(**APPROXIMATE)
    names = list(identities)
    enrol_all(gallery, {n: identities[n] for n in names[:8]}, embeddings)
    assert gallery.save_index()
    # another process enrols two more after the save: the file is behind the store
    other = Gallery.open(gallery.config, master_key=master_key, now=clock)
    enrol_all(other, {n: identities[n] for n in names[8:]}, embeddings)
    other.close()
    gallery.close()

    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    for name in names:
        assert found(reopened, embeddings[identities[name][2]])[0] == name
    probe = embeddings[identities[names[9]][2]]
    assert info(reopened, probe) == {
        **info(reopened, probe), "source": "file", "templates": 20,
        "file_checked_by": "change log",
    }
    reopened.close()


def test_an_erased_subject_never_comes_back_after_reopening(
    make_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
) -> None:
    gallery = make_gallery(**APPROXIMATE)
    enrol_all(gallery, identities, embeddings)
    gallery.save_index()
    erased = next(iter(identities))
    probe = embeddings[identities[erased][2]]
    assert found(gallery, probe)[0] == erased
    path = index_file.index_path(Path(gallery.config.index_dir or ""), probe.model_id)
    backup = path.read_bytes()
    gallery.forget(erased, actor="dpo")
    path.write_bytes(backup)  # a copy of the file from before the erasure, restored
    gallery.close()

    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    assert erased not in found(reopened, probe)
    assert info(reopened, probe)["source"] == "new"  # its key went with the erasure
    reopened.save_index()
    reopened.close()
    again = Gallery.open(gallery.config, master_key=master_key, now=clock)
    assert erased not in found(again, probe)
    assert info(again, probe) == {
        **info(again, probe), "source": "file", "templates": 18,
        "file_checked_by": "change log",
    }
    again.close()


def test_a_file_from_another_history_of_the_store_is_not_trusted(
    make_gallery: Callable[..., Gallery],
    grant: Callable[..., str],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
) -> None:
    """The database is restored from a backup older than the index file, then written to
    until its generation passes the file's: the file holds subjects the store does not."""
    gallery = make_gallery(**APPROXIMATE)
    names = list(identities)
    enrol_all(gallery, {n: identities[n] for n in names[:4]}, embeddings)
    gallery.close()
    db = Path(gallery.config.db_path)
    shutil.copy(db, db.with_name("backup.db"))  # closed: the WAL is checkpointed
    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    enrol_all(reopened, {n: identities[n] for n in names[4:6]}, embeddings)
    reopened.save_index()  # holds names[4:6]
    file_generation = reopened.store.generation()
    reopened.close()
    shutil.copy(db.with_name("backup.db"), db)  # restored: names[4:6] were never enrolled
    restored = Gallery.open(gallery.config, master_key=master_key, now=clock)
    for name in names[6:]:  # without the duplicate search: this process never opens the file
        restored.add_subject(name, actor="registrar")
        grant(restored, name)
        restored.enroll(name, [embeddings[p] for p in identities[name][:2]],
                        actor="registrar", check_duplicates=False)
    assert restored.store.generation() > file_generation
    restored.close()

    again = Gallery.open(gallery.config, master_key=master_key, now=clock)
    for name in names[4:6]:
        assert name not in found(again, embeddings[identities[name][2]])
    for name in names[6:]:
        assert found(again, embeddings[identities[name][2]])[0] == name
    probe = embeddings[identities[names[0]][2]]
    assert info(again, probe)["templates"] == 16
    assert info(again, probe)["source"] == "new"  # the file held others: destroyed, rebuilt
    again.close()


def test_a_file_saved_inside_a_write_transaction_is_checked_template_by_template(
    make_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
) -> None:
    """Such a file may hold changes that were rolled back: it is never trusted by generation."""
    gallery = make_gallery(**APPROXIMATE)
    enrol_all(gallery, identities, embeddings)
    with gallery.batch():
        gallery.save_index()
    gallery.close()
    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    probe = embeddings[next(iter(embeddings))]
    assert info(reopened, probe) == {
        **info(reopened, probe), "source": "file", "file_checked_by": "every template",
    }
    reopened.close()


def test_bulk_reading_pauses_the_cycle_collector_and_restores_it() -> None:
    assert gc.isenabled()
    with bulk_reading():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with bulk_reading():
            pass
        assert not gc.isenabled()  # off before: left off
    finally:
        gc.enable()
