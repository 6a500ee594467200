"""Gallery search through an approximate index: same answers as exact, eligibility exact,
erasure real.

Every test runs twice: with the default ``auto`` kind switching to the quantized
scan at 4 templates (``index_exact_below=4``) and with the ``hnsw`` graph, so the
sample's 20 templates are searched through faiss or hnswlib, filtered by the
exact set of eligible template ids.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from facetrust import crypto
from facetrust.errors import IndexFileError, InvalidParameter
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig, index_file

#: Gallery settings that search through each approximate index, and the kind reported.
APPROXIMATE = {
    "quantized": {"index_exact_below": 4},
    "hnsw": {"index_kind": "hnsw"},
}


@pytest.fixture(params=sorted(APPROXIMATE))
def approximate(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of a gallery that searches through one approximate index kind."""
    return {**APPROXIMATE[request.param], "expected_kind": request.param}


def settings_of(approximate: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in approximate.items() if k != "expected_kind"}
GalleryFactory = Callable[..., Gallery]
FakeClock = Any  # conftest.FakeClock
KOFI, SERENA, VENUS, FOX = "Kofi_Annan", "Serena_Williams", "Venus_Williams", "Vicente_Fox"


def probes(identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]) -> list[Embedding]:
    """Photos 2-3 of each identity (not enrolled)."""
    return [embeddings[p] for paths in identities.values() for p in paths[2:]]


def ranked(gallery: Gallery, probe: Embedding, **options: object) -> list[tuple[str, float]]:
    """The 5 nearest eligible subjects of ``probe`` for boarding, with no threshold."""
    hits, _ = gallery.parts.indexes.get(probe.model_id).search(
        gallery_vector(gallery, probe), purpose="boarding", now=gallery.now(), k=5,
        threshold=10.0, **options,  # type: ignore[arg-type]
    )
    return [(h.subject_id, h.distance) for h in hits]


def gallery_vector(gallery: Gallery, probe: Embedding) -> object:
    return crypto.protect(probe.vector, gallery.parts.keyring.template_secret())


def found(gallery: Gallery, probe: Embedding, purpose: str = "boarding") -> list[str]:
    result = gallery.identify(probe, purpose=purpose, actor="officer", k=10, case_ref="CASE-1")
    return [c.subject_id for c in result.candidates]


def test_graph_search_returns_what_exact_search_returns(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    graph = make_gallery("graph", **settings_of(approximate))
    exact = make_gallery("exact", index_kind="exact")
    for gallery in (graph, exact):
        enrol_all(gallery, identities, embeddings)
    members = [KOFI, SERENA, VENUS, FOX, "Hu_Jintao"]
    for probe in probes(identities, embeddings):
        assert found(graph, probe) == found(exact, probe)
        for options in ({}, {"only": members}, {"exclude": SERENA}):
            a, b = ranked(graph, probe, **options), ranked(exact, probe, **options)
            assert [s for s, _ in a] == [s for s, _ in b]
            assert [d for _, d in a] == pytest.approx([d for _, d in b], abs=1e-5)
    assert graph.index_info()[probe.model_id]["kind"] == approximate["expected_kind"]
    assert exact.index_info()[probe.model_id]["kind"] == "exact"


def test_fair_point_search_stays_exact_on_a_graph_gallery(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    fair = {"operating_point": "fmr-1e-3-fair"}
    graph = make_gallery("graph", **settings_of(approximate), **fair)
    exact = make_gallery("exact", index_kind="exact", **fair)
    for gallery in (graph, exact):
        enrol_all(gallery, identities, embeddings)
    for probe in probes(identities, embeddings):
        a = graph.identify(probe, purpose="boarding", actor="officer", k=10,
            case_ref="CASE-1").candidates
        b = exact.identify(probe, purpose="boarding", actor="officer", k=10,
            case_ref="CASE-1").candidates
        assert [c.subject_id for c in a] == [c.subject_id for c in b]
        assert [c.distance for c in a] == pytest.approx([c.distance for c in b], abs=1e-6)


def test_ineligible_subjects_never_come_back_through_the_graph(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    clock: FakeClock,
    grant: Callable[..., str],
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery(**settings_of(approximate))
    withdrawn_consent = ""
    for name, paths in identities.items():
        gallery.add_subject(name, actor="registrar")
        if name == KOFI:  # consented to another purpose only
            grant(gallery, name, ("access-control",))
        elif name == SERENA:  # boarding consent that expires first
            grant(gallery, name, ("boarding",), days=2)
            grant(gallery, name, ("access-control",), days=60)
        elif name == VENUS:  # boarding consent withdrawn later, access-control kept
            withdrawn_consent = grant(gallery, name, ("boarding",))
            grant(gallery, name, ("access-control",))
        else:
            grant(gallery, name, ("boarding", "access-control"))
        gallery.enroll(name, [embeddings[p] for p in paths[:2]], actor="registrar")
    gallery.withdraw_consent(VENUS, withdrawn_consent, actor="venus")
    model_id = embeddings[identities[KOFI][0]].model_id
    assert gallery.index_info()[model_id]["kind"] == approximate["expected_kind"]
    # each ineligible subject is its own photos' nearest template, searched for directly
    for name in (KOFI, VENUS):
        for path in identities[name]:
            assert name not in [s for s, _ in ranked(gallery, embeddings[path])]
            assert name in found(gallery, embeddings[path], purpose="access-control")
    assert SERENA in found(gallery, embeddings[identities[SERENA][2]])
    clock.advance(days=3)  # Serena's boarding consent has expired: out at once
    for path in identities[SERENA]:
        assert SERENA not in [s for s, _ in ranked(gallery, embeddings[path])]
        assert SERENA in found(gallery, embeddings[path], purpose="access-control")
    others = [n for n in identities if n not in (KOFI, SERENA, VENUS)]
    for name in others:  # and no eligible subject is lost to the filtering
        assert found(gallery, embeddings[identities[name][2]])[:1] == [name]


def test_erasure_leaves_the_graph_at_once_here_and_in_another_gallery_object(
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    make_gallery: GalleryFactory,
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery("graph", **settings_of(approximate))
    enrol_all(gallery, identities, embeddings)
    other = Gallery.open(gallery.config, master_key=master_key, now=clock)
    probe = embeddings[identities[KOFI][2]]
    assert found(gallery, probe) == [KOFI] and found(other, probe) == [KOFI]
    path = index_file.index_path(Path(gallery.config.index_dir or ""), probe.model_id)
    assert path.exists()  # the graph built on the first search was saved

    gallery.forget(KOFI, actor="dpo")
    assert not path.exists()  # the saved graph is gone with its key
    assert gallery.keystore.get_key(index_file.key_name(probe.model_id)) is None
    for photo in identities[KOFI]:
        assert KOFI not in [s for s, _ in ranked(gallery, embeddings[photo])]
        assert KOFI not in [s for s, _ in ranked(other, embeddings[photo])]
    for view in (gallery, other):
        info = view.index_info()[probe.model_id]
        assert info["kind"] == approximate["expected_kind"] and info["templates"] == 18
    other.close()


def test_restart_loads_the_saved_graph_and_adds_what_is_new(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery(**settings_of(approximate))
    names = list(identities)
    enrol_all(gallery, {n: identities[n] for n in names[:8]}, embeddings)
    probe = embeddings[identities[names[0]][2]]
    before = ranked(gallery, probe)
    gallery.close()

    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    assert ranked(reopened, probe) == before
    assert reopened.index_info()[probe.model_id]["source"] == "file"
    # enrol two more: the file is now behind the store (an older generation)
    enrol_all(reopened, {n: identities[n] for n in names[8:]}, embeddings)
    reopened.close()

    again = Gallery.open(gallery.config, master_key=master_key, now=clock)
    info_probe = embeddings[identities[names[9]][2]]
    assert found(again, info_probe) == [names[9]]
    info = again.index_info()[probe.model_id]
    assert info["source"] == "file" and info["templates"] == 20
    again.close()


def test_a_saved_graph_from_before_an_erasure_is_never_used(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery(**settings_of(approximate))
    enrol_all(gallery, identities, embeddings)
    probe = embeddings[identities[KOFI][2]]
    assert found(gallery, probe) == [KOFI]
    path = index_file.index_path(Path(gallery.config.index_dir or ""), probe.model_id)
    backup = path.read_bytes()  # e.g. a file-level backup taken before the erasure
    wrapped = gallery.keystore.get_key(index_file.key_name(probe.model_id))
    assert wrapped is not None and KOFI.encode() not in backup  # sealed, not plain
    gallery.forget(KOFI, actor="dpo")
    name = index_file.key_name(probe.model_id)
    assert gallery.keystore.get_key(name) is None  # the restored copy's key is destroyed
    path.write_bytes(backup)  # restored from the backup
    gallery.close()

    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    assert KOFI not in found(reopened, probe)
    info = reopened.index_info()[probe.model_id]
    assert info["source"] == "new" and info["templates"] == 18  # rebuilt from the store
    rewrapped = reopened.keystore.get_key(name)
    assert rewrapped is not None and path.read_bytes() != backup  # saved anew, new key
    path.with_name("old.index").write_bytes(backup)
    with pytest.raises(IndexFileError):
        index_file.read_sealed_index(
            path.with_name("old.index"),
            master_key.unwrap(rewrapped, f"data-key:{name}"),
            probe.model_id,
        )
    reopened.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "generation"])
def test_a_damaged_index_file_is_rebuilt_not_trusted(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
    damage: str,
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery(**settings_of(approximate))
    enrol_all(gallery, identities, embeddings)
    probe = embeddings[identities[FOX][2]]
    before = ranked(gallery, probe)
    gallery.close()
    path = index_file.index_path(Path(gallery.config.index_dir or ""), probe.model_id)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        del data[-100:]
    else:  # claim a later generation than the one sealed
        data = bytearray(bytes(data).replace(b'"generation": ', b'"generation": 9', 1))
    path.write_bytes(bytes(data))

    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    assert ranked(reopened, probe) == before
    assert reopened.index_info()[probe.model_id]["source"] == "new"
    reopened.close()


def test_save_index_after_erasure_writes_a_compacted_graph(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: FakeClock,
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery(**settings_of(approximate))
    enrol_all(gallery, identities, embeddings)
    probe = embeddings[identities[KOFI][2]]
    assert found(gallery, probe) == [KOFI]
    kofi_templates = [t.template_id for t in gallery.store.templates_of(KOFI)]
    gallery.forget(KOFI, actor="dpo")
    [path] = gallery.save_index()
    name = index_file.key_name(probe.model_id)
    wrapped = gallery.keystore.get_key(name)
    assert wrapped is not None
    key = master_key.unwrap(wrapped, f"data-key:{name}")
    sealed = index_file.read_sealed_index(path, key, probe.model_id)
    assert len(sealed.index) == 18 and not set(kofi_templates) & set(sealed.slots)
    gallery.close()
    reopened = Gallery.open(gallery.config, master_key=master_key, now=clock)
    assert KOFI not in found(reopened, probe)
    assert reopened.index_info()[probe.model_id]["source"] == "file"
    reopened.close()


def test_rekeyed_templates_invalidate_the_saved_graph(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
    approximate: dict[str, Any],
) -> None:
    gallery = make_gallery(**settings_of(approximate))
    enrol_all(gallery, identities, embeddings)
    probe = embeddings[identities[FOX][2]]
    assert found(gallery, probe) == [FOX]
    path = index_file.index_path(Path(gallery.config.index_dir or ""), probe.model_id)
    assert path.exists()
    gallery.rekey_templates(actor="security")
    assert not path.exists()
    assert found(gallery, probe) == [FOX]  # every template re-added under the new secret
    assert gallery.index_info()[probe.model_id]["templates"] == 20


@pytest.mark.parametrize(
    ("settings", "library"),
    [
        ({"index_kind": "hnsw"}, "hnswlib"),
        ({"index_kind": "quantized"}, "faiss"),
        (APPROXIMATE["quantized"], "faiss"),
    ],
)
def test_without_its_library_the_gallery_searches_exactly_and_warns(
    make_gallery: GalleryFactory,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, Any],
    library: str,
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # `import <library>` now fails
    graph = make_gallery("graph", **settings)
    exact = make_gallery("exact", index_kind="exact")
    with pytest.warns(RuntimeWarning, match=library):
        enrol_all(graph, identities, embeddings)
    enrol_all(exact, identities, embeddings)
    for probe in probes(identities, embeddings):
        a, b = ranked(graph, probe), ranked(exact, probe)
        assert [s for s, _ in a] == [s for s, _ in b]
        assert [d for _, d in a] == pytest.approx([d for _, d in b], abs=1e-6)
        assert found(graph, probe) == found(exact, probe)
    model_id = probe.model_id
    assert graph.index_info()[model_id]["kind"] == "exact"
    assert graph.save_index() == []


def test_index_settings_are_checked_and_saved(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter, match="index_kind"):
        GalleryConfig.in_folder(tmp_path, index_kind="graph")
    with pytest.raises(InvalidParameter, match="index_exact_below"):
        GalleryConfig.in_folder(tmp_path, index_exact_below=-1)
    config = GalleryConfig.in_folder(tmp_path, index_kind="hnsw", index_exact_below=500)
    loaded = GalleryConfig.load(config.save(tmp_path / "facetrust-gallery.json"))
    assert (loaded.index_kind, loaded.index_exact_below) == ("hnsw", 500)
    assert loaded.index_dir == tmp_path / "index"


def test_reserved_subject_ids_are_refused(sample_gallery: Gallery) -> None:
    with pytest.raises(InvalidParameter, match="letters A-Z and a-z, digits"):
        sample_gallery.add_subject(index_file.KEY_PREFIX + "x", actor="registrar")
