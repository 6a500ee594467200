"""The search index follows the store's change log: after each change it equals
an index read afresh from the store, without reading the whole store again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facetrust import crypto
from facetrust.faces import Embedding
from facetrust.gallery import Gallery
from facetrust.gallery.index import TemplateIndex

KOFI, NEW = "Kofi_Annan", "newcomer"


def contents(gallery: Gallery, model_id: str) -> dict[str, Any]:
    """What decides a search: every row's subject and vector, who is eligible per purpose."""
    index: TemplateIndex = gallery.parts.indexes.get(model_id)
    pairs = zip(index.owners, index.vectors, strict=True)
    rows = sorted((index.subject_ids[o], v.tobytes()) for o, v in pairs)
    now = gallery.now()
    eligible = {
        str(p): sorted(
            index.subject_ids[i] for i in np.flatnonzero(index.eligibility(p, now).subjects_ok)
        )
        for p in (None, *gallery.config.purposes)
    }
    return {"rows": rows, "eligible": eligible}


def fresh_view(gallery: Gallery, key: crypto.MasterKey, clock: Any, model_id: str) -> Any:
    with Gallery.open(gallery.config, master_key=key, now=clock) as fresh:
        return contents(fresh, model_id)


def test_each_change_is_applied_without_reading_the_whole_store(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    grant: Callable[..., str],
) -> None:
    gallery = sample_gallery
    consent = grant
    photos = identities[KOFI]
    model_id = embeddings[photos[0]].model_id
    indexes = gallery.parts.indexes
    indexes.get(model_id)  # loaded once, in full

    def no_full_reload(model: str) -> TemplateIndex:
        raise AssertionError("the index was read in full again")

    monkeypatch.setattr(indexes, "reload", no_full_reload)
    others = [n for n in identities if n != KOFI]
    changes: list[Callable[[], object]] = [
        lambda: gallery.add_subject(NEW, actor="registrar"),
        lambda: consent(gallery, NEW, ("boarding",)),
        lambda: gallery.enroll(NEW, [embeddings[identities[others[0]][3]]], actor="registrar"),
        lambda: consent(gallery, KOFI, ("access-control",)),
        lambda: gallery.withdraw_consent(
            KOFI, gallery.consents(KOFI)[0].consent_id, actor="registrar", reason="asked"
        ),
        lambda: gallery.verify_subject(
            embeddings[photos[3]], KOFI, purpose="access-control", actor="officer",
                case_ref="CASE-1"
        ),
        lambda: gallery.withdraw_consent(KOFI, None, actor="registrar", reason="asked"),
        lambda: gallery.forget(others[1], actor="dpo", reason="request"),
        lambda: gallery.rekey_templates(actor="security"),
    ]
    for change in changes:
        before = gallery.store.generation()
        change()
        assert gallery.store.generation() > before
        assert contents(gallery, model_id) == fresh_view(gallery, master_key, clock, model_id)
    final = contents(gallery, model_id)
    assert KOFI not in final["rows"] and KOFI not in final["eligible"]["None"]
    assert others[1] not in final["eligible"]["None"] and NEW in final["eligible"]["boarding"]
    found = gallery.identify(embeddings[photos[2]], purpose="access-control", actor="officer",
        case_ref="CASE-1")
    assert KOFI not in [c.subject_id for c in found.candidates]


def test_an_erasure_in_another_process_is_applied_at_its_next_search(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: Any,
) -> None:
    probe = embeddings[identities[KOFI][2]]
    with Gallery.open(sample_gallery.config, master_key=master_key, now=clock) as other:
        found = other.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        assert KOFI in [c.subject_id for c in found.candidates]
        sample_gallery.forget(KOFI, actor="dpo", reason="request")
        found = other.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        assert KOFI not in [c.subject_id for c in found.candidates]
        assert contents(other, probe.model_id) == fresh_view(
            other, master_key, clock, probe.model_id
        )


def test_a_change_log_that_no_longer_reaches_back_reloads_in_full(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: Any,
) -> None:
    probe = embeddings[identities[KOFI][2]]
    with Gallery.open(sample_gallery.config, master_key=master_key, now=clock) as other:
        other.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        seen = other.parts.indexes.get(probe.model_id).generation
        sample_gallery.store.keep_removals = 0  # type: ignore[attr-defined]
        sample_gallery.forget(KOFI, actor="dpo", reason="request")
        assert other.store.changes_since(seen) is None
        found = other.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        assert KOFI not in [c.subject_id for c in found.candidates]


def test_an_index_refreshed_in_a_rolled_back_transaction_is_not_trusted(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: Any,
    grant: Callable[..., str],
) -> None:
    gallery = sample_gallery
    probe = embeddings[identities[KOFI][2]]
    grant(gallery, KOFI, ("access-control",))  # kept: withdrawing boarding erases nothing
    (boarding,) = [c.consent_id for c in gallery.store.consents_of(KOFI)
                   if c.purposes == ("boarding",)]
    gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    before = gallery.store.generation()
    with pytest.raises(RuntimeError), gallery.batch():
        gallery.add_subject(NEW, actor="registrar")
        grant(gallery, NEW)
        gallery.search(probe, purpose="boarding")  # the index sees the uncommitted subject
        raise RuntimeError("the batch fails")
    assert gallery.store.generation() == before
    with Gallery.open(gallery.config, master_key=master_key, now=clock) as other:
        # one change, so the same generation number as the rolled-back batch's
        other.withdraw_consent(KOFI, boarding, actor="dpo")
    assert gallery.store.generation() == before + 1
    found = gallery.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
    assert KOFI not in [c.subject_id for c in found.candidates]
    assert contents(gallery, probe.model_id) == fresh_view(
        gallery, master_key, clock, probe.model_id
    )


def test_on_postgres_another_process_applies_changes_from_the_log(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: Any,
    postgres_url: Callable[[], str],
    enrol_all: Callable[..., None],
    grant: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from facetrust.gallery import GalleryConfig

    config = GalleryConfig.in_folder(
        tmp_path, key_file=None, database_url=postgres_url(), keystore_url=postgres_url()
    )
    probe = embeddings[identities[KOFI][2]]
    with Gallery.create(config, master_key, now=clock) as gallery, Gallery.open(
        config, master_key=master_key, now=clock
    ) as other:
        enrol_all(gallery, identities, embeddings)
        found = other.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        assert KOFI in [c.subject_id for c in found.candidates]

        def no_full_reload(model: str) -> TemplateIndex:
            raise AssertionError("the index was read in full again")

        monkeypatch.setattr(other.parts.indexes, "reload", no_full_reload)
        gallery.add_subject(NEW, actor="registrar")
        grant(gallery, NEW)
        gallery.enroll(NEW, [embeddings[identities[KOFI][3]]], actor="registrar")
        gallery.forget(KOFI, actor="dpo", reason="request")
        found = other.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        assert KOFI not in [c.subject_id for c in found.candidates]
        assert NEW in [c.subject_id for c in found.candidates]
        assert contents(other, probe.model_id) == contents(gallery, probe.model_id)
