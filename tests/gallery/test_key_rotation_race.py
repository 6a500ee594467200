"""A master key rotation while another process writes data keys: no key is left wrapped
by the retired master key, whatever the interleaving, and a rotation stopped with such
a key is finished by running it again.

Each test runs two galleries on one folder in one thread: the rotating one, and the
"other process" (opened before the rotation, so holding the old key in memory), whose
writes run whenever the rotation is about to start a write transaction. A rotation is
a sequence of write transactions, each holding its database's write lock, so these
points are every place another process's key-store transaction can fall.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from facetrust import crypto
from facetrust.errors import KeyMaterialError
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig, index_file
from facetrust.gallery.backends import open_keystore, open_store
from facetrust.gallery.key_file import rotate_key_file
from facetrust.gallery.keyring import data_key_label
from facetrust.gallery.pending import probe_key_name

KOFI = "Kofi_Annan"  # enrolled before the rotation
LATE = "Colin_Powell"  # enrolled by the other process while the rotation runs
INDEX_KEY = index_file.key_name("test-model")


@dataclass
class Moment:
    """What the rotation had done when the other process wrote, and how each write ended."""

    rewrapped: bool  # the key store was re-wrapped under the new key
    switched: bool  # the store names the new key
    outcomes: dict[str, str] = field(default_factory=dict)  # write -> "stored" | "refused"


class Crash(Exception):
    """Stands for the rotating process dying."""


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Callable[[], dict[str, Any]]:
    """Makes the settings of a new gallery: SQLite files, or two new PostgreSQL databases."""
    if request.param == "sqlite":
        return dict
    make_url: Callable[[], str] = request.getfixturevalue("postgres_url")
    return lambda: {"database_url": make_url(), "keystore_url": make_url()}


def make_folder(
    folder: Path,
    settings: dict[str, Any],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> Path:
    """A gallery in ``folder`` (key file, config) with KOFI enrolled and LATE consented."""
    gallery, config_path = Gallery.init_folder(folder, **settings)
    with gallery:
        for subject in (KOFI, LATE):
            gallery.add_subject(subject, actor="registrar")
            grant(gallery, subject)
        gallery.enroll(KOFI, [embeddings[p] for p in identities[KOFI][:2]], actor="registrar")
    return config_path


def warm(gallery: Gallery, probe: Embedding) -> None:
    """Search once, as a running service or batch would have: templates held in memory."""
    gallery.identify(probe, purpose="boarding", actor="officer", case_ref="WARM")


def write_data_keys(gallery: Gallery, probe: Embedding, moment: Moment) -> None:
    """Every way a running process writes a data key, each tried once."""
    writes: dict[str, Callable[[], object]] = {
        "enrolment": lambda: gallery.enroll(LATE, [probe], actor="registrar"),
        "kept probe": lambda: gallery.parts.keyring.add_data_key(
            probe_key_name("interleaved"), now=gallery.now()
        ),
        "index file": lambda: gallery.parts.keyring.new_data_key(INDEX_KEY),
    }
    for name, write in writes.items():
        try:
            write()
        except KeyMaterialError as error:
            assert "rotated" in str(error) and "Open the gallery again" in str(error)
            moment.outcomes[name] = "refused"
        else:
            moment.outcomes[name] = "stored"


@contextmanager
def rotating_backends(
    config: GalleryConfig, before_write: Callable[[], None]
) -> Iterator[dict[str, Any]]:
    """The rotation's store and key store, calling ``before_write`` before each of its
    write transactions begins (when the rotation holds no write lock)."""
    depth = [0]
    backends = {"store": open_store(config), "keystore": open_keystore(config)}
    for backend in backends.values():
        original = backend.transaction

        @contextmanager
        def transaction(original: Callable[[], Any] = original) -> Iterator[None]:
            if depth[0] == 0:
                before_write()
            depth[0] += 1
            try:
                with original():
                    yield
            finally:
                depth[0] -= 1

        backend.transaction = transaction  # type: ignore[method-assign]
    try:
        yield backends
    finally:
        for backend in backends.values():
            backend.close()


def rotate_with_a_writer_at(
    config_path: Path, point: int, probe: Embedding, *, stop_after_switch: bool = False
) -> tuple[Moment | None, int]:
    """Rotate the key file while the other process writes data keys before the
    rotation's write transaction number ``point`` (after the rotation if it has fewer).

    With ``stop_after_switch``, the rotation is interrupted (as by a crash) at its first
    write after the store switched to the new key. Returns what the writer met and how
    many write transactions the rotation began.
    """
    config = GalleryConfig.load(config_path)
    assert config.key_file is not None
    key_file = config.key_file
    pending = key_file.with_name(key_file.name + ".new")
    other = Gallery.find(config_path)  # opened before the rotation: the old key in memory
    warm(other, probe)
    seen: list[Moment] = []
    count = [0]

    def state() -> Moment:
        wrapped = other.keystore.get_key(KOFI)
        new_key = crypto.read_key_file(pending if pending.exists() else key_file)
        switched = other.store.get_meta("master_key_id") == new_key.key_id_hex
        return Moment(wrapped is not None and new_key.is_wrapper_of(wrapped), switched)

    def before_write() -> None:
        moment = state()
        if stop_after_switch and moment.switched and seen:
            raise Crash
        if count[0] == point:
            seen.append(moment)
            write_data_keys(other, probe, moment)
        count[0] += 1

    try:
        with rotating_backends(config, before_write) as backends:
            rotate_key_file(config, actor="admin", **backends)
    except Crash:
        assert stop_after_switch
    if not seen and not stop_after_switch:  # the rotation had fewer writes: after it
        seen.append(state())
        write_data_keys(other, probe, seen[0])
    other.close()
    return (seen[0] if seen else None), count[0]


def finish_enrolment(config_path: Path, probe: Embedding) -> None:
    """What the refused process does: open the gallery again (current key) and retry."""
    with Gallery.find(config_path) as reopened:
        if not reopened.store.templates_of(LATE):
            reopened.enroll(LATE, [probe], actor="registrar")


def assert_nothing_lost(
    config_path: Path, identities: dict[str, list[Path]], embeddings: dict[Path, Embedding]
) -> None:
    """Every key wrapped by the key file's key, every subject found, the audit log intact."""
    with Gallery.find(config_path) as gallery:
        key = gallery.parts.keyring.master_key
        stale = [n for n, w in gallery.keystore.all_keys().items() if not key.is_wrapper_of(w)]
        assert stale == []
        for name in gallery.keystore.all_keys():  # and each one opens
            wrapped = gallery.keystore.get_key(name)
            assert wrapped is not None and key.unwrap(wrapped, data_key_label(name))
        for subject in (KOFI, LATE):
            probe = embeddings[identities[subject][3]]
            found = gallery.identify(probe, purpose="boarding", actor="officer", case_ref="C-1")
            assert found.candidates and found.candidates[0].subject_id == subject
        report = gallery.audit.verify()
        assert report.ok, report


def test_rotation_leaves_no_key_wrapped_by_the_old_master_key(
    tmp_path: Path,
    backend: Callable[[], dict[str, Any]],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    probe = embeddings[identities[LATE][0]]
    moments = []
    for point in range(10):
        settings = backend()
        config_path = make_folder(tmp_path / f"g{point}", settings, identities, embeddings, grant)
        moment, writes = rotate_with_a_writer_at(config_path, point, probe)
        assert moment is not None
        for name, outcome in moment.outcomes.items():
            # a write that met the new key in the store is refused, never stored
            assert outcome == ("refused" if moment.switched else "stored"), (point, name)
        finish_enrolment(config_path, probe)
        assert_nothing_lost(config_path, identities, embeddings)
        moments.append(moment)
        if point >= writes:  # this one wrote after the whole rotation
            break
    # The reviewer's window was met: keys written with the old key after the key store was
    # re-wrapped, before the store switched (re-wrapped by the final re-scan) ...
    assert any(m.rewrapped and not m.switched for m in moments)
    # ... and writes after the switch, refused.
    assert any(m.switched for m in moments)


def test_an_interrupted_rotation_with_a_late_key_is_finished_by_running_it_again(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    probe = embeddings[identities[LATE][0]]
    config_path = make_folder(tmp_path / "g", {}, identities, embeddings, grant)
    config = GalleryConfig.load(config_path)
    assert config.key_file is not None
    old_key = crypto.read_key_file(config.key_file)
    # the other process writes between the re-wrap and the switch; the rotation then dies
    moment, _ = rotate_with_a_writer_at(config_path, 1, probe, stop_after_switch=True)
    assert moment is not None and moment.rewrapped and not moment.switched
    assert set(moment.outcomes.values()) == {"stored"}
    keystore = open_keystore(config)
    late = keystore.get_key(LATE)
    keystore.close()
    assert late is not None and old_key.is_wrapper_of(late)  # and the old key file is all
    assert config.key_file.exists()  # that still opens it

    result = rotate_key_file(config, actor="admin")  # old key file still there: finished
    assert result.rewrapped == 3  # the enrolment's, the kept probe's, the index file's
    assert not config.key_file.with_name(config.key_file.name + ".new").exists()
    assert_nothing_lost(config_path, identities, embeddings)
    with Gallery.find(config_path) as gallery:
        assert [e.kind for e in gallery.audit.events(kind="keys.rewrap")] == ["keys.rewrap"]


def test_a_late_key_from_an_earlier_rotation_needs_the_retired_key_file(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    config_path = make_folder(tmp_path / "g", {}, identities, embeddings, grant)
    config = GalleryConfig.load(config_path)
    assert config.key_file is not None
    retired = crypto.read_key_file(config.key_file)
    retired_file = crypto.write_key_file(tmp_path / "retired.key", retired.material)
    rotate_key_file(config, actor="admin")
    # What the race left before this fix: LATE's key wrapped by the retired master key.
    with Gallery.find(config_path) as gallery:
        gallery.enroll(LATE, [embeddings[identities[LATE][0]]], actor="registrar")
        key = gallery.parts.keyring.data_key(LATE)
        assert key is not None
        with gallery.keystore.transaction():
            gallery.keystore.put_key(LATE, retired.wrap(key, data_key_label(LATE)))
    current = config.key_file.read_text()

    with pytest.raises(KeyMaterialError, match="retired key file") as refused:
        rotate_key_file(config, actor="admin")
    assert refused.value.field == "retired_key_file"  # the CLI names --retired-key-file
    assert config.key_file.read_text() == current  # nothing thrown away
    result = rotate_key_file(config, actor="admin", retired_key_file=retired_file)
    assert result.rewrapped == 1 + 2 + 2  # the late key, then KOFI's and LATE's, 2 secrets
    assert_nothing_lost(config_path, identities, embeddings)


def test_a_process_holding_a_rotated_key_writes_nothing_wrapped_by_it(
    tmp_path: Path,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    probe = embeddings[identities[LATE][0]]
    config_path = make_folder(tmp_path / "g", {}, identities, embeddings, grant)
    stale = Gallery.find(config_path)
    warm(stale, probe)
    rotate_key_file(GalleryConfig.load(config_path), actor="admin")
    name = probe_key_name(uuid.uuid4().hex)
    for write in (
        lambda: stale.enroll(LATE, [probe], actor="registrar"),
        lambda: stale.parts.keyring.add_data_key(name, now=stale.now()),
        lambda: stale.parts.keyring.new_data_key(INDEX_KEY),
        lambda: stale.rekey_templates(actor="admin"),
    ):
        with pytest.raises(KeyMaterialError, match="rotated .* after the gallery was opened"):
            write()
    for subject in (LATE, name, INDEX_KEY):
        assert stale.keystore.get_key(subject) is None  # the kept probe's key deleted again
    stale.close()
    finish_enrolment(config_path, probe)
    assert_nothing_lost(config_path, identities, embeddings)


def test_a_key_written_while_the_re_scan_waits_for_it_is_rewrapped(
    tmp_path: Path,
    backend: Callable[[], dict[str, Any]],
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    grant: Callable[..., str],
) -> None:
    """The reviewer's interleaving with real lock waits: the other process's key-store
    transaction begins before the switch and commits after it, while the rotation's
    re-scan waits for its lock."""
    probe = embeddings[identities[LATE][0]]
    config_path = make_folder(tmp_path / "g", backend(), identities, embeddings, grant)
    config = GalleryConfig.load(config_path)
    other = Gallery.find(config_path)
    warm(other, probe)
    holding, go = threading.Event(), threading.Event()
    add_key = other.keystore.add_key

    def add_key_then_wait(name: str, wrapped: bytes, *, created_at: str) -> None:
        add_key(name, wrapped, created_at=created_at)
        if name == LATE:  # inside the enrolment's key-store transaction
            holding.set()
            go.wait(30)

    other.keystore.add_key = add_key_then_wait  # type: ignore[method-assign]
    failures: list[BaseException] = []

    def enrol() -> None:
        try:
            other.enroll(LATE, [probe], actor="registrar")
        except BaseException as error:  # reported below, in the test's thread
            failures.append(error)

    writer = threading.Thread(target=enrol)
    count = [0]

    def before_write() -> None:
        count[0] += 1
        if count[0] == 2:  # the key store re-wrapped, the switch next
            writer.start()
            assert holding.wait(30)
        elif count[0] == 3:  # switched: the re-scan now waits for the enrolment's lock
            go.set()

    try:
        with rotating_backends(config, before_write) as backends:
            rotate_key_file(config, actor="admin", **backends)
    finally:
        go.set()
        if writer.is_alive() or count[0] >= 2:
            writer.join(30)
        other.close()
    assert not writer.is_alive() and failures == []
    assert_nothing_lost(config_path, identities, embeddings)
