"""Enrolment and the subject's data key: read once from the key store, and a key
destroyed under stored templates (an erasure stopped half-way) still refuses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from facetrust.errors import StoreError
from facetrust.gallery import Gallery


def count_key_reads(gallery: Gallery, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the keys ``gallery`` reads one at a time from its key store from now
    on (the search index's bulk loads, ``get_keys``, are not counted)."""
    reads: list[str] = []
    get_key = gallery.keystore.get_key

    def counted(name: str) -> bytes | None:
        reads.append(name)
        return get_key(name)

    monkeypatch.setattr(gallery.keystore, "get_key", counted)
    return reads


def test_an_enrolment_reads_the_subjects_data_key_once(
    make_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    grant: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gallery = make_gallery()
    name, photos = next(iter(identities.items()))
    gallery.add_subject(name, actor="registrar")
    grant(gallery, name)
    reads = count_key_reads(gallery, monkeypatch)
    gallery.enroll(name, [photos[0]], actor="registrar")  # no key yet: it is made
    made = reads.count(name)
    reads.clear()
    gallery.enroll(name, [photos[1]], actor="registrar")  # the key is there
    assert reads.count(name) == 1, reads
    # one read that finds none, and the one under the key store's lock before making it
    assert made == 2
    assert len(gallery.store.templates_of(name)) == 2


def test_a_subject_whose_key_was_destroyed_under_its_templates_is_not_enrolled(
    make_gallery: Callable[..., Gallery],
    identities: dict[str, list[Path]],
    grant: Callable[..., str],
) -> None:
    """What an erasure killed after its first step leaves (see test_erasure_interrupted
    for the killed process itself): a new key would seal templates beside ones no key
    opens."""
    gallery = make_gallery()
    name, photos = next(iter(identities.items()))
    gallery.add_subject(name, actor="registrar")
    grant(gallery, name)
    gallery.enroll(name, [photos[0]], actor="registrar")
    with gallery.keystore.transaction():
        assert gallery.keystore.delete_key(name)  # as an erasure's first step does
    with pytest.raises(StoreError, match="retention sweep"):
        gallery.enroll(name, [photos[1]], actor="registrar")
    assert gallery.keystore.get_key(name) is None  # no new key beside the shredded template
    assert len(gallery.store.templates_of(name)) == 1
