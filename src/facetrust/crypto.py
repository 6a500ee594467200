"""Keys, template encryption and template protection for the gallery.

Three layers protect a stored template:

1. **Keyed rotation** (ISO/IEC 24745 unlinkability and renewability). Every
   gallery has its own secret; from it a random orthogonal matrix ``Q`` is
   derived and every template is stored as ``Q @ v``. Rotations keep Euclidean
   distances exactly, so accuracy is unchanged, but the same face enrolled in two
   galleries gives unrelated vectors. A new secret renews every template without
   re-enrolment. A rotation is invertible by whoever holds the secret: it is not
   by itself irreversible; the secret lives wrapped by the master key.
2. **Per-subject data keys**. Each subject's templates and photos are encrypted
   with AES-256-GCM under the subject's own random data key. Destroying that key
   (crypto-shredding) makes every copy of the ciphertext unreadable, backups
   included.
3. **Master key**. Data keys and gallery secrets are stored wrapped (AES-256-GCM)
   by a 32-byte master key read from a key file (mode 0600) or from the
   ``FACETRUST_MASTER_KEY`` environment variable, never from the database.

Wrapped values carry the 8-byte id of the master key that wrapped them, so a
wrong key gives a clear error instead of a bare authentication failure, and an
interrupted key rotation can resume.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import KeyMaterialError

#: Environment variable that may hold the master key (base64 or hex of 32 bytes).
MASTER_KEY_ENV = "FACETRUST_MASTER_KEY"

KEY_BYTES = 32
_NONCE_BYTES = 12
_KEY_ID_BYTES = 8


@dataclass(frozen=True)
class MasterKey:
    """The 32-byte key that wraps every data key and gallery secret.

    Attributes
    ----------
    material : bytes
        The secret itself (never printed).
    source : str
        Where it was read from, for error messages (a path or the variable name).
    """

    material: bytes = field(repr=False)
    source: str = "memory"
    _aead: AESGCM = field(init=False, repr=False, compare=False)
    _key_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.material) != KEY_BYTES:
            raise KeyMaterialError(
                f"The master key from {self.source} must be {KEY_BYTES} bytes. "
                f"Got {len(self.material)} bytes. Create one with `facetrust init` "
                "or facetrust.crypto.generate_key()."
            )
        wrapping = _derive(self.material, b"facetrust key wrapping v1", KEY_BYTES)
        object.__setattr__(self, "_aead", AESGCM(wrapping))
        key_id = _derive(self.material, b"facetrust master key id", _KEY_ID_BYTES)
        object.__setattr__(self, "_key_id", key_id)

    @property
    def key_id(self) -> bytes:
        """8 bytes that identify the key without revealing it."""
        return self._key_id

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    def wrap(self, secret: bytes, label: str) -> bytes:
        """Encrypt ``secret`` under this key; ``label`` binds it to its use (e.g. a subject id)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret, label.encode())
        return self.key_id + nonce + sealed

    def unwrap(self, wrapped: bytes, label: str) -> bytes:
        """Decrypt a value made by :meth:`wrap` with the same ``label``.

        Raises
        ------
        KeyMaterialError
            It was wrapped by another master key, or it was altered.
        """
        key_id, nonce, sealed = _split(wrapped)
        if key_id != self.key_id:
            raise KeyMaterialError(
                f"A value was wrapped by master key {key_id.hex()}, but the key from "
                f"{self.source} is {self.key_id_hex}. Use the gallery's own key file or "
                f"{MASTER_KEY_ENV}. If the key was rotated while this process ran, start it "
                "again with the new key file; after an interrupted `facetrust keys rotate`, "
                "run it again."
            )
        try:
            return self._aead.decrypt(nonce, sealed, label.encode())
        except InvalidTag:
            raise KeyMaterialError(
                f"A wrapped key for {label!r} failed authentication: it was altered or "
                "belongs to another record. Restore it from a trusted copy."
            ) from None

    def is_wrapper_of(self, wrapped: bytes) -> bool:
        """Whether ``wrapped`` was wrapped by this key (judged by its key id)."""
        return wrapped[:_KEY_ID_BYTES] == self.key_id


def _split(wrapped: bytes) -> tuple[bytes, bytes, bytes]:
    if len(wrapped) < _KEY_ID_BYTES + _NONCE_BYTES + 16:
        raise KeyMaterialError(
            f"A wrapped value is {len(wrapped)} bytes, too short to be one. The store is damaged."
        )
    head = _KEY_ID_BYTES + _NONCE_BYTES
    return wrapped[:_KEY_ID_BYTES], wrapped[_KEY_ID_BYTES:head], wrapped[head:]


def _derive(material: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(material)


def derive_key(secret: bytes, label: str) -> bytes:
    """A 32-byte key for ``label``, derived from ``secret`` (HKDF-SHA256, ``label`` as info).

    Keys derived for different labels are independent of one another, so one
    gallery secret can key several uses without one use's key revealing another's.
    """
    return _derive(secret, label.encode(), KEY_BYTES)


def generate_key() -> bytes:
    """32 fresh random bytes for a master key, data key or gallery secret."""
    return secrets.token_bytes(KEY_BYTES)


def encode_key(material: bytes) -> str:
    """The text form of a key as written to key files: base64."""
    return base64.b64encode(material).decode("ascii")


def decode_key(text: str, source: str) -> MasterKey:
    """Parse the base64 (or 64-digit hex) text of a master key."""
    text = text.strip()
    try:
        if len(text) == 2 * KEY_BYTES:
            material = bytes.fromhex(text)
        else:
            material = base64.b64decode(text, validate=True)
    except ValueError:
        raise KeyMaterialError(
            f"The master key in {source} is neither base64 nor hex. Expected the 44-character "
            "base64 text `facetrust init` writes."
        ) from None
    return MasterKey(material, source)


def write_key_file(path: str | os.PathLike[str], material: bytes) -> Path:
    """Write a key file readable and writable by its owner only (mode 0600).

    The file is created with 0600 from the start (never world-readable, even
    briefly) and replaces ``path`` atomically.
    """
    target = Path(path)
    temporary = target.with_name(target.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, (encode_key(material) + "\n").encode("ascii"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.chmod(temporary, 0o600)
    os.replace(temporary, target)
    return target


def read_key_file(path: str | os.PathLike[str]) -> MasterKey:
    """Read a master key file, refusing one that others can read.

    Raises
    ------
    KeyMaterialError
        The file is missing, unreadable, group/world accessible or malformed.
    """
    target = Path(path)
    try:
        mode = target.stat().st_mode
        text = target.read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyMaterialError(
            f"The master key file {str(target)!r} does not exist. Point --key-file (or the "
            f"gallery config) at it, set {MASTER_KEY_ENV}, or create a gallery with "
            "`facetrust init`."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise KeyMaterialError(
            f"Cannot read the master key file {str(target)!r}: {error}."
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyMaterialError(
            f"The master key file {str(target)!r} has mode {stat.S_IMODE(mode):o}; expected 600 "
            f"(owner only). Run `chmod 600 {target}`."
        )
    return decode_key(text, repr(str(target)))


def load_master_key(
    key_file: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> MasterKey:
    """The master key from ``FACETRUST_MASTER_KEY`` if set, else from ``key_file``."""
    environ = os.environ if environ is None else environ
    text = environ.get(MASTER_KEY_ENV)
    if text:
        return decode_key(text, MASTER_KEY_ENV)
    if key_file is None:
        raise KeyMaterialError(
            f"No master key: set {MASTER_KEY_ENV} or give a key file (`facetrust init` makes one)."
        )
    return read_key_file(key_file)


def seal(key: bytes, plaintext: bytes, label: str) -> bytes:
    """AES-256-GCM encrypt ``plaintext`` under a data ``key``; returns nonce + ciphertext."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, label.encode())


def open_sealed(key: bytes, sealed: bytes, label: str) -> bytes:
    """Decrypt a value made by :func:`seal` with the same ``label``.

    Raises
    ------
    KeyMaterialError
        Wrong key, or the ciphertext was altered or moved to another record.
    """
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], label.encode())
    except InvalidTag:
        raise KeyMaterialError(
            f"The ciphertext of {label!r} failed authentication: wrong data key, or the "
            "record was altered. Restore it from a trusted copy or re-enrol the subject."
        ) from None


def keyed_digest(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key``."""
    return hmac.new(key, data, hashlib.sha256).digest()


def rotation_matrix(secret: bytes, dim: int) -> npt.NDArray[np.float64]:
    """The keyed random orthogonal matrix of shape (dim, dim) for a gallery secret.

    Drawn uniformly (Haar measure) from a seed derived from ``secret`` with HKDF:
    QR decomposition of a Gaussian matrix with the signs of R's diagonal folded
    into Q. Deterministic for a given secret and dimension.
    """
    return _rotation(bytes(secret), int(dim)).copy()


@lru_cache(maxsize=8)
def _rotation(secret: bytes, dim: int) -> npt.NDArray[np.float64]:
    seed = _derive(secret, b"facetrust template rotation v1:" + str(dim).encode(), KEY_BYTES)
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed, "big")))
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    result: npt.NDArray[np.float64] = q * np.sign(np.diag(r))
    result.setflags(write=False)
    return result


def protect(vector: npt.ArrayLike, secret: bytes) -> npt.NDArray[np.float32]:
    """Rotate a template (shape (dim,) or (n, dim)) with the gallery's keyed rotation."""
    array = np.asarray(vector, dtype=np.float64)
    matrix = _rotation(bytes(secret), array.shape[-1])
    return np.ascontiguousarray(array @ matrix.T, dtype=np.float32)


def unprotect(vector: npt.ArrayLike, secret: bytes) -> npt.NDArray[np.float32]:
    """Undo :func:`protect` (the transpose of an orthogonal matrix is its inverse)."""
    array = np.asarray(vector, dtype=np.float64)
    matrix = _rotation(bytes(secret), array.shape[-1])
    return np.ascontiguousarray(array @ matrix, dtype=np.float32)
