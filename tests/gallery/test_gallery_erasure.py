"""Erasure and crypto-shredding, retention, key rotation and wrong keys."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from facetrust import crypto
from facetrust.errors import KeyMaterialError, StoreError, UnknownSubject
from facetrust.faces import Embedding
from facetrust.gallery import Gallery, GalleryConfig, erasure
from facetrust.gallery.key_file import rotate_key_file
from facetrust.store import SqliteKeyStore, SqliteStore

KOFI = "Kofi_Annan"


def files_of(path: Path) -> bytes:
    """The bytes of a SQLite file and its write-ahead log."""
    data = path.read_bytes()
    wal = Path(str(path) + "-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


def test_forget_crypto_shreds_and_leaves_no_template_bytes(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    tmp_path: Path,
) -> None:
    gallery = sample_gallery
    ciphertexts = [t.ciphertext for t in gallery.store.templates_of(KOFI)]
    wrapped_key = gallery.keystore.get_key(KOFI)
    assert len(ciphertexts) == 2 and wrapped_key is not None
    backup = tmp_path / "backup.db"
    source = sqlite3.connect(gallery.config.db_path)
    with sqlite3.connect(backup) as target:
        source.backup(target)  # an operator's backup of the gallery file, before erasure
    source.close()

    result = gallery.forget(KOFI, actor="dpo", reason="GDPR Art. 17 request")
    assert result.key_destroyed and result.subject_forgotten and result.rows_deleted == 2

    # never returned again, under any purpose, from any of the person's photos
    for path in identities[KOFI]:
        for purpose in gallery.config.purposes:
            found = gallery.identify(embeddings[path], purpose=purpose, actor="officer", k=10,
                case_ref="CASE-1")
            assert KOFI not in [c.subject_id for c in found.candidates]
    with pytest.raises(UnknownSubject):
        gallery.verify_subject(
            embeddings[identities[KOFI][3]], KOFI, purpose="boarding", actor="officer",
                case_ref="CASE-1"
        )
    with pytest.raises(UnknownSubject):
        gallery.get_subject(KOFI)
    with pytest.raises(StoreError, match="never reused"):
        gallery.add_subject(KOFI, actor="registrar")

    # the backup still holds the ciphertext, but no key that exists can open it
    copy = sqlite3.connect(backup)
    saved = [
        bytes(r[0])
        for r in copy.execute("SELECT ciphertext FROM templates WHERE subject_id = ?", (KOFI,))
    ]
    copy.close()
    assert sorted(saved) == sorted(ciphertexts)
    assert gallery.keystore.get_key(KOFI) is None
    for subject_id, wrapped in gallery.keystore.all_keys().items():
        other_key = master_key.unwrap(wrapped, f"data-key:{subject_id}")
        for ciphertext in saved:
            with pytest.raises(KeyMaterialError):
                crypto.open_sealed(other_key, ciphertext, "any")
    # and a gallery restored from the backup cannot return the erased subject
    restored_config = GalleryConfig(backup, gallery.config.keystore_path)
    with Gallery.open(restored_config, master_key=master_key) as restored:
        found = restored.identify(
            embeddings[identities[KOFI][2]], purpose="boarding", actor="auditor", k=10,
                case_ref="CASE-1"
        )
        assert KOFI not in [c.subject_id for c in found.candidates]

    # the template bytes and the wrapped key remain in no file of the live gallery
    live = files_of(gallery.config.db_path)
    for ciphertext in ciphertexts:
        assert ciphertext not in live
        assert ciphertext[12:44] not in live
    assert wrapped_key not in files_of(gallery.config.keystore_path)
    assert gallery.audit.verify().ok
    erase = list(gallery.audit.events(kind="erase"))[-1]
    assert erase.subject_ids == (KOFI,) and erase.fields["reason"] == "GDPR Art. 17 request"


def test_withdrawal_erases_biometrics_but_keeps_the_consent_history(
    sample_gallery: Gallery,
) -> None:
    result = sample_gallery.withdraw_consent(KOFI, actor="registrar", reason="asked at desk")
    assert result.erasure is not None and result.erasure.rows_deleted == 2
    assert sample_gallery.get_subject(KOFI).template_count == 0
    assert sample_gallery.keystore.get_key(KOFI) is None
    (history,) = sample_gallery.consents(KOFI)
    assert history.status == "withdrawn" and history.withdrawal_reason == "asked at desk"


def test_withdrawing_one_of_two_consents_keeps_the_templates(
    sample_gallery: Gallery, grant: Any
) -> None:
    second = grant(sample_gallery, KOFI, ("access-control",))
    result = sample_gallery.withdraw_consent(KOFI, second, actor="registrar")
    assert result.erasure is None
    assert sample_gallery.get_subject(KOFI).template_count == 2


@pytest.mark.parametrize("page", [3, erasure.SWEEP_PAGE])  # a page or several
def test_retention_excludes_before_the_sweep_and_the_sweep_purges(
    make_gallery: Any,
    clock: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Any,
    monkeypatch: pytest.MonkeyPatch,
    page: int,
) -> None:
    monkeypatch.setattr(erasure, "SWEEP_PAGE", page)
    gallery = make_gallery(retention_days=30)
    enrol_all(gallery, identities, embeddings)  # consents valid 30 days, retention 30 days
    clock.advance(days=20)
    kofi_probe = embeddings[identities[KOFI][3]]
    assert gallery.verify_subject(kofi_probe, KOFI, purpose="boarding", actor="officer",
        case_ref="CASE-1").match
    gallery.grant_consent(
        KOFI,
        ["boarding"],
        expires_at=clock.current.replace(year=2027),
        evidence_ref="renewal",
        evidence_sha256="cd" * 32,
        notice_version="v2",
        actor="registrar",
    )
    clock.advance(days=15)  # others: 35 days since last interaction; Kofi: 15
    searched = gallery.identify(kofi_probe, purpose="boarding", actor="officer", k=10,
        case_ref="CASE-1")
    assert searched.subjects_searched == 1
    other = gallery.identify(
        embeddings[identities["Hu_Jintao"][3]], purpose="boarding", actor="officer", k=10,
            case_ref="CASE-1"
    )
    assert [c.subject_id for c in other.candidates] == []
    assert len(gallery.store.all_templates()) == 20  # excluded, not yet purged

    sweep = gallery.sweep_retention(actor="cron")
    assert set(sweep.erased) == set(identities) - {KOFI}
    assert {t.subject_id for t in gallery.store.all_templates()} == {KOFI}
    assert [s.subject_id for s in gallery.list_subjects()] == [KOFI]
    (event,) = gallery.audit.events(kind="retention.sweep")
    assert event.actor == "cron" and event.fields["erased"] == 9
    assert event.fields["checked"] == 10
    assert gallery.audit.verify().ok


def test_sweep_erases_biometrics_of_lapsed_consent(
    make_gallery: Any,
    clock: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    enrol_all: Any,
) -> None:
    gallery = make_gallery()
    enrol_all(gallery, identities, embeddings)
    clock.advance(days=31)
    sweep = gallery.sweep_retention()
    assert len(sweep.erased) == 10 and gallery.store.all_templates() == []
    assert len(gallery.list_subjects()) == 10  # consent lapsed: record kept, biometrics gone


def test_master_key_rotation_rewraps_without_reenrolment(
    sample_gallery: Gallery,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
    master_key: crypto.MasterKey,
    clock: Any,
) -> None:
    config = sample_gallery.config
    before = {t.template_id: t.ciphertext for t in sample_gallery.store.all_templates()}
    new_key = crypto.MasterKey(crypto.generate_key(), "new")
    result = sample_gallery.rotate_master_key(new_key, actor="admin")
    assert result.rewrapped == 10 + 2  # data keys + gallery secrets
    after = {t.template_id: t.ciphertext for t in sample_gallery.store.all_templates()}
    assert after == before  # templates untouched: only keys were re-wrapped
    sample_gallery.close()
    with pytest.raises(KeyMaterialError, match="sealed with master key"):
        Gallery.open(config, master_key=master_key)
    with Gallery.open(config, master_key=new_key, now=clock) as reopened:
        probe = embeddings[identities[KOFI][3]]
        found = reopened.identify(probe, purpose="boarding", actor="officer", case_ref="CASE-1")
        assert found.candidates[0].subject_id == KOFI
        assert reopened.audit.verify().ok


def test_wrong_missing_or_exposed_key_is_a_clear_error(
    sample_gallery: Gallery, tmp_path: Path
) -> None:
    config = sample_gallery.config
    sample_gallery.close()
    with pytest.raises(KeyMaterialError, match="sealed with master key"):
        Gallery.open(config, master_key=crypto.MasterKey(crypto.generate_key(), "wrong"))
    with pytest.raises(KeyMaterialError, match="does not exist"):
        crypto.read_key_file(tmp_path / "absent.key")
    exposed = crypto.write_key_file(tmp_path / "exposed.key", crypto.generate_key())
    os.chmod(exposed, 0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        crypto.read_key_file(exposed)
    with pytest.raises(KeyMaterialError, match="No master key"):
        crypto.load_master_key(None, environ={})
    with pytest.raises(KeyMaterialError, match="must be 32 bytes"):
        crypto.load_master_key(None, environ={crypto.MASTER_KEY_ENV: "c2hvcnQ="})


def test_key_file_rotation_resumes_after_an_interruption(tmp_path: Path) -> None:
    gallery, config_path = Gallery.init_folder(tmp_path / "g")
    gallery.add_subject("s1", actor="registrar")
    gallery.parts.keyring.data_key("s1", create=True)
    config = gallery.config
    gallery.close()
    assert config.key_file is not None
    assert config.key_file.stat().st_mode & 0o777 == 0o600
    # Interrupted after the key store was re-wrapped, before the gallery was:
    pending = config.key_file.with_name(config.key_file.name + ".new")
    new_key = crypto.read_key_file(crypto.write_key_file(pending, crypto.generate_key()))
    old_key = crypto.read_key_file(config.key_file)
    keystore = SqliteKeyStore(config.keystore_path)
    with keystore.transaction():
        wrapped = keystore.get_key("s1")
        assert wrapped is not None
        keystore.put_key("s1", new_key.wrap(old_key.unwrap(wrapped, "data-key:s1"), "data-key:s1"))
    keystore.close()
    result = rotate_key_file(config, actor="admin")
    assert result.new_key_id == new_key.key_id_hex and not pending.exists()
    with Gallery.find(config_path) as reopened:
        assert reopened.parts.keyring.data_key("s1") is not None
        assert reopened.audit.verify().ok


def test_store_refuses_a_foreign_file(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE x (y)")
    with pytest.raises(StoreError, match="not a facetrust gallery"):
        SqliteStore(other)


def test_master_key_from_the_environment(tmp_path: Path) -> None:
    gallery, config_path = Gallery.init_folder(tmp_path / "g")
    gallery.close()
    key_file = tmp_path / "g" / "gallery.key"
    key_text = key_file.read_text()
    key_file.unlink()
    with pytest.raises(KeyMaterialError, match="does not exist"):
        Gallery.find(config_path, environ={})
    with Gallery.find(config_path, environ={crypto.MASTER_KEY_ENV: key_text}) as reopened:
        assert reopened.audit.verify().ok
    wrong = crypto.encode_key(crypto.generate_key())
    with pytest.raises(KeyMaterialError, match="sealed with master key"):
        Gallery.find(config_path, environ={crypto.MASTER_KEY_ENV: wrong})


def test_erasure_takes_the_display_name_and_the_sweep_leaves_a_tombstone(
    sample_gallery: Gallery,
    grant: Any,
    identities: dict[str, list[Path]],
    embeddings: dict[Path, Embedding],
) -> None:
    gallery = sample_gallery
    gallery.add_subject("ama", display_name="Ama Mensah", actor="desk")
    grant(gallery, "ama")
    gallery.enroll("ama", [embeddings[identities[KOFI][2]]], actor="desk", check_duplicates=False)
    gallery.withdraw_consent("ama", actor="desk")
    left = gallery.get_subject("ama")
    assert left.display_name is None and left.template_count == 0  # no personal data left
    record = gallery.store.get_subject("ama")
    assert record is not None and record.display_name is None
    swept = gallery.sweep_retention()
    assert swept.erased == ("ama",)  # nothing but ended consents: forgotten
    with pytest.raises(UnknownSubject):
        gallery.get_subject("ama")
    (history,) = gallery.consents("ama")  # the consent history stays, as evidence
    assert history.status == "withdrawn"
    with pytest.raises(StoreError):
        gallery.add_subject("ama", actor="desk")  # an erased id is never reused
    gallery.add_subject("pending", actor="desk")  # registered, consent not yet given
    assert "pending" not in gallery.sweep_retention().erased
    erase = [e for e in gallery.audit.events(kind="erase") if e.subject_ids == ("ama",)]
    assert [e.fields["subject_forgotten"] for e in erase] == [False, True]
