"""A gallery's search indexes: one in-memory index per model, kept in step with the store.

:class:`SearchIndexes` holds each model's :class:`~facetrust.gallery.index.TemplateIndex`
(decrypted, protected templates and what decides each subject's eligibility)
and brings it up to date whenever the store's generation counter moves (any
change to subjects, consents or templates, by this process or another). It
also keeps the approximate index on disk between runs (:mod:`.index_file`):
sealed under its own key, destroyed on erasure.

Upkeep follows the size of a change, not of the gallery: the store's change
log (:meth:`~facetrust.store.base.Store.changes_since`) names the templates
inserted, re-encrypted or deleted and the subjects whose record or consents
changed since the index's generation; only those templates are decrypted
(with only their subjects' data keys), only those subjects' retention and
consent times re-read. The first load, and a change log that no longer
reaches back to the index's generation, read everything; so does the first
search after a transaction in which the index was brought up to date (a
batch enrolment's duplicate search): that transaction may have been rolled
back, and another writer may since have reached the same generation number.

The index file is a cache: a search that cannot write it (a folder that
cannot be written, a directory in the file's place) logs one line and
answers from memory; only ``facetrust index save`` reports the failure as
an error.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import IndexFileError, KeyMaterialError
from ..index.scratch import remove_abandoned
from ..store.base import KeyStore, Store, StoreChanges, TemplateRecord
from . import index_file
from .config import GalleryConfig
from .consent import retention_until
from .index import TemplateIndex
from .keyring import Keyring
from .vectors import LiveTemplate, TemplateVectors, ciphertext_digest

log = logging.getLogger(__name__)

#: Store meta counter bumped whenever templates are erased or re-encrypted.
REMOVALS_META = "templates_removed"


def live_templates(readable: dict[str, TemplateRecord]) -> list[LiveTemplate]:
    """What the vector store keeps of each readable template: ids and ciphertext digest."""
    return [
        LiveTemplate(t.template_id, t.subject_id, ciphertext_digest(t.ciphertext))
        for t in readable.values()
    ]


def count_removal(store: Store) -> None:
    """Bump the store's count of template removals (inside a store transaction).

    A process saving its index file compares the count before and after
    writing, and withdraws its file when templates were removed meanwhile.
    """
    count = store.get_meta(REMOVALS_META)
    store.set_meta(REMOVALS_META, str(int(count or 0) + 1))


@contextmanager
def bulk_reading() -> Iterator[None]:
    """Pause Python's cycle collector while millions of records are read.

    A cold start creates millions of strings and tuples, none of them in a
    reference cycle; each allocation burst otherwise triggers full collections
    that walk every object already loaded (about a quarter of the CPU time of
    opening a million-template gallery). Objects are still freed by reference
    counting; the collector resumes on exit unless it was off before.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class SearchIndexes:
    """Per-model search indexes of one gallery (see module docstring).

    Parameters
    ----------
    config : GalleryConfig
        Index kind, exact-search size, index folder, purposes, retention.
    store, keystore : Store, KeyStore
    keyring : Keyring
        Unwraps data keys and opens templates; keeps the index files' keys.
    """

    def __init__(
        self, config: GalleryConfig, store: Store, keystore: KeyStore, keyring: Keyring
    ) -> None:
        self.config = config
        self.store = store
        self.keystore = keystore
        self.keyring = keyring
        self._indexes: dict[str, TemplateIndex] = {}
        # model id -> its decrypted templates and vector index, updated by difference
        self._vectors: dict[str, TemplateVectors] = {}
        # models whose index holds changes of a write transaction not known to be committed
        self._tentative: set[str] = set()
        # model id -> how its index file was checked against the store when opened
        self._checked: dict[str, str] = {}
        # whether reads save a newly built graph (off while save() writes it anyway)
        self._save_on_read = True

    def clear(self) -> None:
        """Drop every decrypted template from memory."""
        self._indexes.clear()
        self._vectors.clear()
        self._tentative.clear()
        self._checked.clear()

    def is_loaded(self, model_id: str) -> bool:
        """Whether this process holds ``model_id``'s index (current or not)."""
        return model_id in self._vectors

    def get(self, model_id: str, *, generation: int | None = None) -> TemplateIndex:
        """The search index of ``model_id``, brought up to date when the store has changed.

        ``generation`` is the store's generation when the caller has just read
        it (it is then not read again).

        The vector index is updated by difference (see :mod:`.vectors`): erased
        or re-keyed templates leave it, new ones are decrypted and added; only
        the changed subjects' consent and retention times are re-read (see
        the module docstring).
        """
        cached = self._indexes.get(model_id)
        if model_id in self._tentative and not self.store.in_transaction():
            cached = None  # its transaction ended, committed or not: read everything
        if cached is not None:
            if generation is None:
                generation = self.store.generation()  # one statement sees every earlier commit
            if generation == cached.generation:
                return cached
        updated = None
        with self.store.snapshot():
            generation = self.store.generation()
            if cached is not None and cached.generation == generation:
                return cached
            if cached is not None:
                changes = self.store.changes_since(cached.generation)
                if changes is not None:
                    was_graph = cached.templates.is_approximate
                    updated = self._update(cached, changes)
        if updated is None:
            return self.reload(model_id)  # first use, or the change log does not reach back
        if updated.templates.is_approximate and not was_graph:
            # the approximate index was just built: keep it, once out of the snapshot
            # (a data key written inside one could miss a master-key rotation)
            self._save_on_read_path(updated.templates)
        return updated

    def reload(self, model_id: str) -> TemplateIndex:
        """Bring ``model_id``'s index to the store by reading every template and subject.

        Templates already held with the same ciphertext are not decrypted again.
        On first use, an index file written from committed state is brought up
        to date from the store's change log instead (see :meth:`_open_from_file`).
        """
        with bulk_reading():
            return self._reload(model_id)

    def _reload(self, model_id: str) -> TemplateIndex:
        if model_id not in self._vectors:
            opened = self._open_from_file(model_id)
            if opened is not None:
                return opened
        with self.store.snapshot():
            generation = self.store.generation()
            removals = self.store.get_meta(REMOVALS_META)
            columns = self.store.eligibility_columns()
            subjects = set(columns.subject_ids)
            templates = [
                t
                for t in self.store.all_templates()
                if t.model_id == model_id and t.subject_id in subjects
            ]
            del subjects
        wrapped_keys = self.keystore.all_keys()
        # a template whose subject has no data key is crypto-shredded: unreadable
        readable = {t.template_id: t for t in templates if t.subject_id in wrapped_keys}
        live = live_templates(readable)
        decrypt = self._decryptor(readable, wrapped_keys)
        vectors = self._vectors.get(model_id)
        just_opened = vectors is None
        if vectors is None:
            vectors = self._vectors[model_id] = self._open_vectors(model_id, live)
        was_graph = vectors.is_approximate
        added, _ = vectors.sync(generation, live, decrypt)
        vectors.removals = removals
        if self.config.index_dir is not None and vectors.is_approximate and (
            not was_graph or (just_opened and added)
        ):
            # an index built here (minutes for an HNSW graph at 1M templates), or a
            # loaded file now behind the store: keep it for the next run
            self._save_on_read_path(vectors)
        index = TemplateIndex.from_columns(
            generation, vectors, columns, self.config.retention_days, self.config.purposes
        )
        return self._keep(index)

    def _apply(
        self,
        vectors: TemplateVectors,
        generation: int,
        removed: list[str],
        readable: dict[str, TemplateRecord],
        wrapped_keys: dict[str, bytes],
        removals: str | None,
    ) -> None:
        """Take ``removed`` out of ``vectors`` and add (or replace) the ``readable`` templates."""
        vectors.apply(
            generation, removed, live_templates(readable), self._decryptor(readable, wrapped_keys)
        )
        vectors.removals = removals

    def _keep(self, index: TemplateIndex) -> TemplateIndex:
        """Cache ``index`` as its model's current one, noting whether it may be uncommitted."""
        self._indexes[index.model_id] = index
        if self.store.in_transaction():
            self._tentative.add(index.model_id)
        else:
            self._tentative.discard(index.model_id)
        return index

    def _update(self, cached: TemplateIndex, changes: StoreChanges) -> TemplateIndex:
        """Apply ``changes`` (read inside the caller's snapshot) to ``cached``'s model."""
        store, vectors = self.store, cached.templates
        model_id = cached.model_id
        mine = [t for t in changes.templates if t.model_id == model_id]
        refreshed = set(changes.subject_ids)
        refreshed.update(t.subject_id for t in mine if t.subject_id not in vectors.codes)
        subjects = {s.subject_id: s for s in store.get_subjects(sorted(refreshed))}
        consents = store.consents_of_subjects(sorted(refreshed))
        removals = store.get_meta(REMOVALS_META)
        live_subjects = {s for s, r in subjects.items() if r.erased_at is None}
        # a template of a subject erased, or without a data key, is unreadable: it goes
        wrapped_keys = self.keystore.get_keys(sorted({t.subject_id for t in mine}))
        readable = {
            t.template_id: t
            for t in mine
            if t.subject_id in wrapped_keys
            and (t.subject_id in live_subjects or t.subject_id not in subjects)
        }
        removed = list(changes.removed_templates)
        removed += [t.template_id for t in mine if t.template_id not in readable]
        self._apply(vectors, changes.generation, removed, readable, wrapped_keys, removals)
        retention = {
            s: retention_until(subjects[s], self.config.retention_days) for s in live_subjects
        }
        return self._keep(cached.updated(changes.generation, retention, refreshed, consents))

    def _decryptor(
        self, readable: dict[str, TemplateRecord], wrapped_keys: dict[str, bytes]
    ) -> Callable[[LiveTemplate], npt.NDArray[np.float32]]:
        """Opens templates of ``readable``, unwrapping each subject's data key once."""
        data_keys: dict[str, bytes] = {}

        def decrypt(item: LiveTemplate) -> npt.NDArray[np.float32]:
            subject_id = item.subject_id
            if subject_id not in data_keys:
                data_keys[subject_id] = self.keyring.unwrap_data_key(
                    subject_id, wrapped_keys[subject_id]
                )
            return self.keyring.open_template(readable[item.template_id], data_keys[subject_id])

        return decrypt

    def _open_vectors(self, model_id: str, live: Sequence[LiveTemplate]) -> TemplateVectors:
        """A new vector index for ``model_id``, from its index file when one can be trusted."""
        vectors = TemplateVectors(
            model_id, self.config.index_kind, self.config.index_exact_below
        )
        folder = self.config.index_dir
        if folder is None or not vectors.graph_possible:
            return vectors
        sealed = self._read_file(model_id)
        if sealed is None:
            return vectors
        current = {t.template_id: t.digest for t in live}
        if any(current.get(t) != digest for t, (digest, _) in sealed.slots.items()):
            # holds a template erased or re-keyed since: never use it, destroy it
            self.drop_files(model_id)
            return vectors
        try:
            vectors.adopt(
                sealed.index, sealed.slots, sealed.owners, sealed.next_id, sealed.generation
            )
        except IndexFileError:
            return vectors  # nothing taken over: rebuilt from the store
        self._checked[model_id] = "every template"
        return vectors

    def _read_file(self, model_id: str) -> index_file.SealedIndex | None:
        """``model_id``'s index file, opened; None if there is none or it cannot be used."""
        folder = self.config.index_dir
        if folder is None:
            return None
        path = index_file.index_path(Path(folder), model_id)
        name = index_file.key_name(model_id)
        wrapped = self.keystore.get_key(name)
        if wrapped is None or not path.exists():
            return None
        try:
            return index_file.read_sealed_index(
                path, self.keyring.unwrap_data_key(name, wrapped), model_id
            )
        except (IndexFileError, KeyMaterialError):
            return None  # unreadable (e.g. written by a newer version): rebuilt

    def _open_from_file(self, model_id: str) -> TemplateIndex | None:
        """The first index of ``model_id`` from its file and the store's change log.

        A file written from committed state holds exactly the store's templates
        at its generation; what changed since (templates added, re-encrypted or
        deleted; subjects erased or withdrawn) is in the change log, so only
        those templates are decrypted, never the million the file holds (the
        cold start of a large gallery). The file's template ids, less those
        deleted or re-encrypted since, must be exactly the store's templates
        unchanged since the file's generation (one read of ids, no ciphertext):
        this catches a file from another history of the store (a database
        restored from a backup older than the file, then written to). None (the
        caller reads everything and checks the file template by template) when
        there is no such file, the change log no longer reaches back to it (or
        it is ahead of the store), or the ids differ.
        """
        vectors = TemplateVectors(
            model_id, self.config.index_kind, self.config.index_exact_below
        )
        if not vectors.graph_possible:
            return None
        sealed = self._read_file(model_id)
        if sealed is None or not sealed.committed:
            return None
        # Read in one snapshot; each bulk read is reduced before the next one, so
        # that a million records of each kind are never all held at once.
        with self.store.snapshot():
            changes = self.store.changes_since(sealed.generation)
            if changes is None:
                return None
            mine = [t for t in changes.templates if t.model_id == model_id]
            held = set(sealed.slots).difference(changes.removed_templates)
            held.difference_update(t.template_id for t in mine)
            stored = self.store.template_ids_through(model_id, sealed.generation)
            # the store's ids are unique (its key): equal sizes and all held means equal sets
            if len(stored) != len(held) or not held.issuperset(stored):
                return None  # not the store's templates at the file's generation
            del held, stored
            removals = self.store.get_meta(REMOVALS_META)
            columns = self.store.eligibility_columns()
        wrapped_keys = self.keystore.get_keys(sorted({t.subject_id for t in mine}))
        # a template of a subject erased (not listed), or without a data key, goes
        live_subjects = set(columns.subject_ids) if mine else set()
        readable = {
            t.template_id: t
            for t in mine
            if t.subject_id in wrapped_keys and t.subject_id in live_subjects
        }
        del live_subjects
        removed = list(changes.removed_templates)
        removed += [t.template_id for t in mine if t.template_id not in readable]
        try:
            vectors.adopt(
                sealed.index, sealed.slots, sealed.owners, sealed.next_id, sealed.generation
            )
        except IndexFileError:
            return None
        del sealed  # its mapping was copied
        self._apply(vectors, changes.generation, removed, readable, wrapped_keys, removals)
        self._vectors[model_id] = vectors
        self._checked[model_id] = "change log"
        index = TemplateIndex.from_columns(
            changes.generation, vectors, columns, self.config.retention_days, self.config.purposes
        )
        return self._keep(index)

    def _save_on_read_path(self, vectors: TemplateVectors) -> None:
        """Keep ``vectors`` in its file for the next run, if it can be written.

        A search must not fail for a cache: a failure is logged (one line) and
        the search goes on from memory.
        """
        if not self._save_on_read:
            return
        try:
            self._save_vectors(vectors)
        except (OSError, IndexFileError) as error:
            log.warning(
                "The search index of %s was not saved in %s (%s); searches use the index in "
                "memory. Make index_dir a folder that can be written, then run `facetrust "
                "index save`.",
                vectors.model_id, self.config.index_dir, error,
            )

    def _save_vectors(self, vectors: TemplateVectors) -> Path | None:
        """Seal ``vectors`` into its index file under a fresh key; None if it cannot be kept."""
        if self.config.index_dir is None or not vectors.is_approximate:
            return None
        model_id = vectors.model_id
        key = self.keyring.new_data_key(index_file.key_name(model_id))
        path = index_file.index_path(Path(self.config.index_dir), model_id)
        index_file.write_sealed_index(
            path, key, vectors, committed=not self.store.in_transaction()
        )
        with self.store.snapshot():
            removals = self.store.get_meta(REMOVALS_META)
        if removals != vectors.removals:
            # templates were erased while the file was written: it may hold them
            self.drop_files(model_id)
            return None
        return path

    def drop_files(self, model_id: str | None = None) -> None:
        """Destroy index-file keys (crypto-shredding every copy) and delete the files,
        and the plaintext scratch folders of killed processes.

        ``model_id`` None drops every model's file.
        """
        names = (
            [index_file.key_name(model_id)] if model_id is not None
            else self.keystore.names_starting(index_file.KEY_PREFIX)
        )
        self.keyring.destroy_data_keys(names)
        remove_abandoned()  # plaintext index files that killed processes left
        if self.config.index_dir is not None:
            folder = Path(self.config.index_dir)
            paths = (
                [index_file.index_path(folder, model_id)]
                if model_id is not None
                else list(folder.glob("*.index"))
            )
            for path in paths:
                try:
                    path.unlink(missing_ok=True)
                except OSError as error:
                    # its key is destroyed: what is left there cannot be read
                    log.warning("The index file %s was not deleted (%s); its key was "
                                "destroyed, so it cannot be read.", path, error)

    def save(self) -> list[Path]:
        """Write every stored model's approximate index to its file (see ``Gallery.save_index``).

        Raises
        ------
        IndexFileError
            A file cannot be written (the folder cannot be created or written).
        """
        written = []
        for model_id in self.stored_model_ids():
            self._save_on_read = False  # written just below, once
            try:
                self.get(model_id)
            finally:
                self._save_on_read = True
            try:
                path = self._save_vectors(self._vectors[model_id])
            except OSError as error:
                raise IndexFileError(
                    f"Cannot write the search index of {model_id} in {self.config.index_dir}: "
                    f"{error}. Make index_dir a folder that can be written (or set it in the "
                    "gallery's config to one that can), then run `facetrust index save` again."
                ) from error
            if path is not None:
                written.append(path)
        return written

    def info(self) -> dict[str, dict[str, Any]]:
        """Per stored model: the index kind, templates held, generation and source, and
        for an index from its file how the file was checked (``file_checked_by``:
        ``change log`` or ``every template``)."""
        for model_id in self.stored_model_ids():
            self.get(model_id)
        return {
            model_id: {
                "kind": v.index_kind,
                "templates": len(v.ids),
                "generation": v.generation,
                "source": v.source,
                **({"file_checked_by": self._checked[model_id]}
                   if v.source == "file" and model_id in self._checked else {}),
            }
            for model_id, v in self._vectors.items()
        }

    def stored_model_ids(self) -> list[str]:
        """Models with templates in the store, and those already searched here."""
        return sorted(set(self.store.template_model_ids()) | set(self._vectors))
