"""The installed command killed (SIGKILL) at an unlucky point of an operation that writes:
the gallery stays consistent, and the next retention sweep or a re-run finishes the work,
on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from facetrust.gallery import Gallery
from installed_command import installed_runner
from kill_points import kill_point_settings

KOFI = "Kofi_Annan"
EVIDENCE = "ab" * 32

Runner = Callable[..., subprocess.CompletedProcess[str]]


def new_gallery(
    folder: Path, backend: str, request: pytest.FixtureRequest | None, *options: str
) -> Runner:
    """``facetrust init`` a gallery in ``folder`` on ``backend``; its installed runner."""
    facetrust = installed_runner(folder, FACETRUST_ACTOR="registrar")
    if backend == "postgres":
        assert request is not None
        postgres_url: Callable[[], str] = request.getfixturevalue("postgres_url")
        options += ("--database-url", postgres_url(), "--keystore-url", postgres_url())
    facetrust("init", str(folder), *options)
    return facetrust


def enrol(facetrust: Runner, subject_id: str, *photos: Path) -> None:
    facetrust("subject", "add", subject_id)
    facetrust("consent", "grant", subject_id, "--purpose", "boarding", "--days", "365",
              "--evidence-ref", f"form-{subject_id}", "--evidence-sha256", EVIDENCE,
              "--notice-version", "v1")
    facetrust("enroll", subject_id, *map(str, photos))


@pytest.mark.slow  # the installed command, killed mid-review, then the sweep
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_review_killed_after_shredding_the_probe_key_leaves_no_row_for_the_sweep(
    tmp_path: Path, photos: dict[str, list[Path]], backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """A decision deletes the kept probe: key destroyed, then the row. Killed between
    the two, the row (ciphertext no key opens) went only at its deadline, hours or
    days later, and the log never said its key was destroyed; the next sweep
    deletes it now, audited."""
    folder = tmp_path / "gallery"
    facetrust = new_gallery(folder, backend, request, "--review-quorum", "1")
    enrol(facetrust, KOFI, photos[KOFI][0])
    alice = json.loads(facetrust("keys", "create", "--role", "operator", "--name", "alice",
                                 "--json").stdout)
    found = json.loads(facetrust("identify", str(photos[KOFI][2]), "--purpose", "boarding",
                                 "--case-ref", "C-1", "--actor", "officer").stdout)
    identification_id = found["identification_id"]
    assert [c["subject_id"] for c in found["candidates"]] == [KOFI]

    killed = installed_runner(folder, **kill_point_settings(
        tmp_path / "kill", stage="probe:key-destroyed"))
    killed("review", identification_id, KOFI, "--key", alice["key"], code=-9)
    with Gallery.find(folder) as gallery:  # the decision and the key's end committed
        assert gallery.store.identification_decided_at(identification_id) is not None
        assert gallery.keystore.get_key(f"facetrust:pending-probe:{identification_id}") is None
        assert gallery.store.get_pending_probe(identification_id) is not None

    facetrust("retention", "sweep")
    with Gallery.find(folder) as gallery:
        assert gallery.store.get_pending_probe(identification_id) is None
        (deleted,) = gallery.audit.events(kind="pending-probe.deleted")
        assert deleted.fields["identification_id"] == identification_id
        assert deleted.fields["row_deleted"] is True
        assert "interrupted" in deleted.fields["reason"]
    facetrust("audit", "verify")


@pytest.mark.slow  # the installed command, killed while it reads the saved index
def test_the_plaintext_index_of_a_killed_process_is_removed_by_the_next(
    tmp_path: Path, photos: dict[str, list[Path]]
) -> None:
    """Opening the saved (encrypted) index decrypts its graph into a private scratch
    folder (``/dev/shm`` when there is one) for the index library to read. A
    process killed then left that plaintext there for good (until a reboot),
    through every later erasure; the next process that reads or writes an
    index file, or erases, removes what a dead process left."""
    pytest.importorskip("hnswlib")
    folder = tmp_path / "gallery"
    facetrust = new_gallery(folder, "sqlite", None, "--index-kind", "hnsw")
    enrol(facetrust, KOFI, photos[KOFI][0], photos[KOFI][1])
    facetrust("index", "save")

    left = tmp_path / "scratch-path"
    killed = installed_runner(folder, **kill_point_settings(
        tmp_path / "kill", call="facetrust.gallery.index_file:load_index", record=left))
    killed("identify", str(photos[KOFI][2]), "--purpose", "boarding", "--case-ref", "C-1",
           code=-9)
    plaintext = Path(left.read_text())
    assert plaintext.is_file()  # the decrypted graph, as the killed process left it

    info = json.loads(facetrust("index", "info").stdout)  # the next process reads the file
    assert info["dlib-resnet-v1"]["source"] == "file"
    assert not plaintext.parent.exists()


@pytest.mark.slow  # the installed command, killed mid-init, then init again
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("point", [
    "facetrust.gallery.opening:create_stores",  # the key file written, nothing else
    "facetrust.audit:AuditLog.append",  # the secrets committed, no gallery.create yet
    "facetrust.gallery.config:GalleryConfig.save",  # everything but the config file
])
def test_an_init_killed_half_way_is_finished_by_running_init_again(
    tmp_path: Path, backend: str, point: str, request: pytest.FixtureRequest
) -> None:
    """`facetrust init` writes a key file, the stores, then the config file. Killed
    before the config file, the folder could neither be opened ("No gallery config
    ... Run `facetrust init`") nor initialised ("'gallery.key' already exists ...
    holds a gallery"; on PostgreSQL "The database already holds a gallery"): the
    same init again now finishes it, with the key already written."""
    folder = tmp_path / "gallery"
    options: tuple[str, ...] = ("--review-quorum", "1")
    if backend == "postgres":
        postgres_url: Callable[[], str] = request.getfixturevalue("postgres_url")
        options += ("--database-url", postgres_url(), "--keystore-url", postgres_url())
    killed = installed_runner(folder, **kill_point_settings(tmp_path / "kill", call=point))
    killed("init", str(folder), *options, code=-9)
    key = (folder / "gallery.key").read_text()

    facetrust = installed_runner(folder, FACETRUST_ACTOR="registrar")
    if point.endswith("GalleryConfig.save"):  # made and logged with quorum 1: not 2
        other = facetrust("init", str(folder), *options, "--review-quorum", "2", code=2)
        assert "review_quorum 1" in other.stderr
    facetrust("init", str(folder), *options)
    assert (folder / "gallery.key").read_text() == key  # what the killed init made is used
    created = facetrust("audit", "export", "--kind", "gallery.create").stdout.splitlines()
    assert len(created) == 1 and json.loads(created[0])["review_quorum"] == 1
    facetrust("subject", "add", "s1")
    facetrust("audit", "verify")
    # a gallery in use is never taken over by init, even without its config file
    facetrust("init", str(folder), *options, code=2)
    config = folder / "facetrust-gallery.json"
    config.rename(tmp_path / "config.json")
    refused = facetrust("init", str(folder), *options, code=2)
    assert "Restore the config file from a backup" in refused.stderr
    assert not config.exists()


@pytest.mark.slow  # the installed batch enrolment, killed mid-subject, then sweeps
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_batch_killed_after_making_a_subjects_key_leaves_no_key_for_ever(
    tmp_path: Path, photos: dict[str, list[Path]], backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """A batch writes a new subject in one store transaction, but its data key is made
    (and committed, in the key store) inside it. Killed before the commit, the key of
    a subject that does not exist stayed for ever unless the batch was run again; the
    retention sweep now destroys it, audited, once it is an hour old (an enrolment
    still writing keeps its key), and a re-run meanwhile keeps it and uses it."""
    from datetime import UTC, datetime, timedelta

    from facetrust.gallery.pending import UNSTORED_KEY_HOURS

    folder = tmp_path / "gallery"
    facetrust = new_gallery(folder, backend, request)
    batch = tmp_path / "photos"
    batch.mkdir()
    (batch / "kofi.jpg").write_bytes(photos[KOFI][0].read_bytes())
    consents = tmp_path / "consents.csv"
    consents.write_text(
        "photo,subject_id,display_name,purposes,expires,evidence_ref,evidence_sha256,"
        f"notice_version\nkofi.jpg,{KOFI},,boarding,2030-01-01,form-1,{EVIDENCE},v1\n"
    )
    killed = installed_runner(folder, FACETRUST_ACTOR="registrar", **kill_point_settings(
        tmp_path / "kill", stage="batch:keys-committed"))
    killed("enroll-batch", str(batch), "--consents", str(consents), "--workers", "1",
           "--no-progress", code=-9)
    with Gallery.find(folder) as gallery:  # the key committed, the subject never
        assert gallery.store.get_subject(KOFI) is None
        assert gallery.keystore.get_key(KOFI) is not None

    facetrust("retention", "sweep")  # at once: it may be an enrolment still writing
    with Gallery.find(folder) as gallery:
        assert gallery.keystore.get_key(KOFI) is not None
        assert list(gallery.audit.events(kind="data-key.destroyed")) == []

    later = datetime.now(UTC) + timedelta(hours=UNSTORED_KEY_HOURS + 0.1)
    with Gallery.find(folder, now=lambda: later) as gallery:
        swept = gallery.sweep_retention(actor="retention-job")
        assert gallery.keystore.get_key(KOFI) is None
        assert swept.data_keys_destroyed == 1
        (destroyed,) = gallery.audit.events(kind="data-key.destroyed")
        assert destroyed.subject_ids == (KOFI,)
        assert "interrupted" in destroyed.fields["reason"]
    facetrust("audit", "verify")

    # a key a re-run committed a subject with is never taken, however old
    killed("enroll-batch", str(batch), "--consents", str(consents), "--workers", "1",
           "--no-progress", code=-9)
    facetrust("enroll-batch", str(batch), "--consents", str(consents), "--workers", "1",
              "--no-progress")
    later = datetime.now(UTC) + timedelta(hours=UNSTORED_KEY_HOURS + 0.1)
    with Gallery.find(folder, now=lambda: later) as gallery:
        assert gallery.sweep_retention(actor="retention-job").data_keys_destroyed == 0
        assert gallery.keystore.get_key(KOFI) is not None
    facetrust("identify", str(photos[KOFI][2]), "--purpose", "boarding", "--case-ref", "C-1",
              "--actor", "officer")
