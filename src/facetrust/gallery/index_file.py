"""The gallery's approximate index on disk: encrypted, tied to a store generation,
shredded on erasure.

An HNSW graph of a million templates takes many minutes to build (the default
quantized index about ten seconds, plus decrypting every template), so a
gallery whose search runs through an approximate index keeps it between runs,
in ``GalleryConfig.index_dir`` (one file per model). The file holds the
:mod:`facetrust.index` file of the index and its vectors, plus the gallery's
template-id mapping and a digest of each template's ciphertext, all sealed with
AES-256-GCM (:func:`facetrust.crypto.seal`: part 0 the mapping, then the
index in 64 MiB chunks, sealed and opened one at a time; each part's label
names the model, the store generation, the part's position and the part
count, so parts cannot be swapped, dropped or moved to another file). The file's own
32-byte key is kept wrapped by the master key in the key store, like a
subject's data key, under the reserved name ``facetrust:index:<model>``, and is
replaced by a fresh one at every save.

Trust on open: the file is used only if its key unwraps it, its model matches,
and every template it holds is still in the store with the same ciphertext
digest; templates enrolled since are then added (no rebuild). A file that
holds a template the store no longer has (erased) or has re-encrypted
(re-keyed) is deleted and its key destroyed, and the index is rebuilt.

Erasure stays real: erasing a subject (and re-keying templates) destroys the
file's key and deletes the file, before and again after the store change (a
concurrent save cannot slip an erased template into a file that survives: a
saver checks the store generation after writing and withdraws its file when it
moved). From the key's destruction on, every copy of the file is unreadable,
backups included. The cost: after an erasure no file exists until the next
:meth:`Gallery.save_index` (e.g. a nightly job) or the next full build. For the
quantized index that save costs only the writing (removal deletes the codes);
an HNSW graph is compacted first (:meth:`HnswIndex.save` rebuilds it without
the erased nodes, whose bytes hnswlib keeps in memory), which at a million
templates takes as long as a build. The plaintext of the index exists only in
memory and, briefly, in a private temporary folder (``/dev/shm`` when there is
one, i.e. RAM), since the index files are written to paths; one that a killed
process left is deleted by the next process that opens a scratch folder or
erases (:mod:`facetrust.index.scratch`).
"""

from __future__ import annotations

import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import crypto
from ..errors import FacetrustError, IndexFileError, KeyMaterialError
from ..index import AutoIndex, load_index
from ..index.scratch import private_scratch
from .vectors import DIGEST_BYTES, TemplateVectors

MAGIC = b"FACETRUST-GALLERY-INDEX\n"
FORMAT_VERSION = 1
#: Key-store name prefix of index-file keys (never a subject id).
KEY_PREFIX = "facetrust:index:"
_CHUNK = 64 * 1024 * 1024


def key_name(model_id: str) -> str:
    """Key-store name of the index-file key of ``model_id``."""
    return KEY_PREFIX + model_id


def index_path(folder: Path, model_id: str) -> Path:
    """The index file of ``model_id`` in ``folder`` (the model id made file-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id)
    return folder / f"{safe}.index"


@dataclass(frozen=True)
class SealedIndex:
    """What an index file holds, decrypted."""

    generation: int
    index: AutoIndex
    slots: dict[str, tuple[bytes, int]]
    owners: dict[str, str]
    next_id: int
    #: Written from committed store state (outside a write transaction): the
    #: file is then exactly the store at ``generation``, and may be brought up
    #: to date from the store's change log alone.
    committed: bool = False


def _label(model_id: str, generation: int, part: int, parts: int) -> str:
    return f"gallery-index:{model_id}:{generation}:{part}/{parts}"


def write_sealed_index(
    path: Path, key: bytes, vectors: TemplateVectors, *, committed: bool = False
) -> None:
    """Seal ``vectors`` (with a graph index) into ``path`` atomically (mode 0600).

    ``committed`` says that ``vectors`` hold committed store state (they were
    not brought up to date inside a write transaction that may roll back).
    Part 0 is the template mapping; parts 1.. are the index file's bytes, read
    and sealed one chunk at a time (the graph is never held twice in memory).
    """
    if vectors.index is None or not vectors.is_approximate:
        raise IndexFileError("There is no approximate index to save: the gallery searches exactly.")
    template_ids = sorted(vectors.slots)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        template_ids=np.asarray(template_ids, dtype=str),
        subjects=np.asarray(_owners_of(vectors, template_ids), dtype=str),
        digests=np.frombuffer(
            b"".join(vectors.slots[t][0] for t in template_ids), dtype=np.uint8
        ).reshape(len(template_ids), DIGEST_BYTES),
        ids=np.asarray([vectors.slots[t][1] for t in template_ids], dtype=np.int64),
        next_id=np.asarray(vectors.next_id),
    )
    model_id, generation = vectors.model_id, vectors.generation
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with private_scratch() as folder:
        scratch = Path(folder) / "index"
        vectors.index.save(scratch)
        parts = 1 + max(1, -(-scratch.stat().st_size // _CHUNK))
        header = json.dumps(
            {
                "format_version": FORMAT_VERSION,
                "model_id": model_id,
                "generation": generation,
                "parts": parts,
                "committed": committed,
            },
            sort_keys=True,
        ).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle, open(scratch, "rb") as graph:
                handle.write(MAGIC + struct.pack("<Q", len(header)) + header)
                for part in range(parts):
                    chunk = buffer.getvalue() if part == 0 else graph.read(_CHUNK)
                    sealed = crypto.seal(key, chunk, _label(model_id, generation, part, parts))
                    handle.write(struct.pack("<Q", len(sealed)) + sealed)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _owners_of(vectors: TemplateVectors, template_ids: list[str]) -> list[str]:
    row_of = {int(slot): row for row, slot in enumerate(vectors.ids.tolist())}
    return [str(vectors.owners[row_of[vectors.slots[t][1]]]) for t in template_ids]


def _read_exact(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("truncated")
    return data


def read_sealed_index(path: Path, key: bytes, model_id: str) -> SealedIndex:
    """Open an index file written by :func:`write_sealed_index`.

    Raises
    ------
    IndexFileError
        Missing, unreadable, of another model or format, altered, truncated, or
        sealed with another key (e.g. destroyed by an erasure); or its library is missing.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, errors told apart
    except OSError as error:
        raise IndexFileError(f"Cannot read the index file {path}: {error}.") from error
    try:
        with handle, private_scratch() as folder:
            if handle.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a gallery index file")
            (length,) = struct.unpack("<Q", _read_exact(handle, 8))
            header = json.loads(_read_exact(handle, length))
            if header["format_version"] != FORMAT_VERSION or header["model_id"] != model_id:
                raise ValueError(
                    f"format {header['format_version']}, model {header['model_id']!r}"
                )
            generation, parts = int(header["generation"]), int(header["parts"])
            committed = header.get("committed") is True
            if parts < 2:
                raise ValueError(f"{parts} parts, expected the mapping and a graph")
            meta = b""
            scratch = Path(folder) / "index"
            with open(scratch, "wb") as graph:
                for part in range(parts):
                    (size,) = struct.unpack("<Q", _read_exact(handle, 8))
                    label = _label(model_id, generation, part, parts)
                    plain = crypto.open_sealed(key, _read_exact(handle, size), label)
                    if part == 0:
                        meta = plain
                    else:
                        graph.write(plain)
            if handle.read(1):
                raise ValueError("trailing bytes")
            with np.load(io.BytesIO(meta), allow_pickle=False) as arrays:
                ids = arrays["ids"].tolist()
                # the index first: its file is read whole, before the mapping's
                # million Python objects exist (a lower peak of memory)
                index = load_index(scratch, model_id=model_id, ids=ids, threshold=0)
                scratch.unlink()
                template_ids = arrays["template_ids"].tolist()
                subjects = arrays["subjects"].tolist()
                # a void view's items are bytes objects, trailing zero bytes kept
                digests = np.ascontiguousarray(arrays["digests"], dtype=np.uint8).view(
                    f"V{DIGEST_BYTES}"
                ).reshape(-1).tolist()
                next_id = int(arrays["next_id"])
    except (ValueError, KeyError, struct.error, KeyMaterialError, ImportError) as error:
        raise IndexFileError(f"The index file {path} cannot be used: {error}.") from error
    except FacetrustError as error:  # corrupt or stale inner file
        raise IndexFileError(f"The index file {path} cannot be used: {error}") from error
    if not isinstance(index, AutoIndex):  # load_index wraps when given a threshold
        raise IndexFileError(f"The index file {path} did not load as a gallery index.")
    if np.any(np.diff(index.exact.row_ids) <= 0):
        # TemplateVectors serves its rows as they are, which needs ascending ids.
        raise IndexFileError(f"The index file {path} holds its rows out of order.")
    return SealedIndex(
        generation,
        index,
        dict(zip(template_ids, zip(digests, ids, strict=True), strict=True)),
        dict(zip(template_ids, subjects, strict=True)),
        next_id,
        committed,
    )
