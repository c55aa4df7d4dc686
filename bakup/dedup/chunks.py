"""The chunk store of each destination: where chunks live, how they are named, written and read.

A chunk is named by a keyed hash of its plaintext, BLAKE3 in keyed mode under the store's chunk
key (BLAKE3 rather than HMAC-SHA256: twice as fast, and hashing every byte of every backup is on
the backup's critical path), so
the names say nothing about the data to whoever can list the bucket without the key, and equal
chunks get equal names (that is the deduplication). It is stored compressed (zstd) and, when
the backups are encrypted, age-encrypted to ENCRYPTION_RECIPIENTS. A chunk object is written
once, create-only, and never changed; only garbage collection deletes it (bakup.dedup.collect).

The chunk key (32 random bytes) is made by the first deduplicated backup of a destination and
kept in that destination's chunk store, as ``key`` (plain JSON) or, for encrypted backups,
``key.age`` (encrypted to the recipients): restoring needs nothing but the storage and, when
encrypted, the age identity. A machine that takes encrypted backups reads the key with
ENCRYPTION_IDENTITY_FILE.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

import pyrage
import zstandard
from blake3 import blake3

from bakup.errors import BakupError, ConfigError, StorageError
from bakup.storage.base import Storage

KEY_FORMAT = "bakup-chunk-key/1"
PLAIN_KEY = "key"
ENCRYPTED_KEY = "key.age"
CHUNK_NAME = re.compile(r"^[0-9a-f]{64}$")
# zstd level 1: a change day seals hundreds of new chunks while pg_dump runs on the same
# cores; level 1 took a third less CPU than 3 and stored no more on bench/dedup_storage's data.
COMPRESSION_LEVEL = 1
AGE_MAGIC = b"age-encryption.org/"


class ChunkError(BakupError):
    """A chunk is missing, unreadable or does not match its name."""


def chunk_id(key: bytes, data: bytes | memoryview) -> str:
    """Return the name of the chunk holding ``data``: its BLAKE3 keyed hash under ``key``
    (a MAC: without the key, names say nothing of the data), in hex."""
    return blake3(data, key=key).hexdigest()


@dataclass
class ChunkStore:
    """One destination's chunks: its storage and chunk key, and which chunks it holds."""

    storage: Storage
    key: bytes
    encrypted: bool

    def names(self) -> dict[str, int]:
        """Return the chunks stored here and their stored sizes. Raises StorageError."""
        return {
            name: size for name, size in self.storage.list_sizes().items() if CHUNK_NAME.match(name)
        }

    def put(self, name: str, blob: bytes) -> None:
        """Store the sealed chunk ``blob`` as ``name`` unless it is there already (the same
        name holds the same data); durable once ``sync`` returns. Raises StorageError."""
        self.storage.create_object(name, blob)

    def sync(self) -> None:
        """Make the chunks stored so far durable (before an index names them)."""
        self.storage.sync()

    def get(self, name: str, identities: list[Any] | None) -> bytes:
        """Return chunk ``name``'s plaintext, checked against its name. Raises ChunkError when
        it is missing, does not decrypt or decompress, or does not match; StorageError when
        the storage fails."""
        try:
            blob = self.storage.get_small(name)
        except FileNotFoundError:
            raise ChunkError(
                f"chunk {name[:16]}... is missing from {self.storage.describe()}", stage="verify"
            ) from None
        data = open_chunk(blob, identities, name)
        if chunk_id(self.key, data) != name:
            raise ChunkError(
                f"chunk {name[:16]}... in {self.storage.describe()} does not match its name "
                "(corrupted)",
                stage="verify",
            )
        return data


def seal_chunk(data: bytes | memoryview, recipients: list[Any] | None) -> bytes:
    """Compress (and, given age ``recipients``, encrypt) a chunk for storing."""
    blob = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compress(data)
    return pyrage.encrypt(blob, recipients) if recipients else blob


def open_chunk(blob: bytes, identities: list[Any] | None, name: str) -> bytes:
    """Undo seal_chunk (an age file is recognised by its header). Raises ChunkError when the
    blob does not decrypt or decompress, ConfigError when it is encrypted and no identity is
    given."""
    try:
        if blob.startswith(AGE_MAGIC):
            if not identities:
                raise ConfigError(
                    [
                        "this backup is encrypted: set ENCRYPTION_IDENTITY_FILE to a file "
                        "holding its age secret key"
                    ]
                )
            blob = pyrage.decrypt(blob, identities)
        return zstandard.ZstdDecompressor().decompress(blob)
    except pyrage.DecryptError:
        raise ChunkError(f"chunk {name[:16]}... does not decrypt", stage="verify") from None
    except zstandard.ZstdError:
        raise ChunkError(
            f"chunk {name[:16]}... does not decompress (corrupted)", stage="verify"
        ) from None


def open_chunk_stores(
    storage: Storage,
    *,
    encrypted: bool,
    recipients: list[Any] | None = None,
    identities: list[Any] | None = None,
    create: bool = False,
) -> list[ChunkStore]:
    """Return the chunk store of each of ``storage``'s destinations, with its key.

    ``encrypted`` picks the key of encrypted or of unencrypted backups. A backup gives its
    ``recipients`` and ``create``, which makes the key where there is none yet; a reader
    (restore, verify) gives ``identities`` for an encrypted backup, and a missing key means no
    deduplicated backup was written there.

    Every destination of one backup holds the same key: a backup names each chunk once and
    writes the same index to all of them, so a chunk has one name everywhere and any
    destination can stand in for another. A destination without a key (a new one, or one
    added to STORAGE_URL later) is given the others' key. Raises ConfigError when the key is
    encrypted and no identity can read it, StorageError when the storage fails or the
    destinations hold different keys, ChunkError when a destination has no key and ``create``
    is false.
    """
    members = storage.chunk_storages()
    found: list[bytes | None] = []
    for member in members:
        if create:
            member.prepare()
        try:
            found.append(_read_key(member, identities, encrypted))
        except FileNotFoundError:
            if not create:
                raise ChunkError(
                    f"{member.describe()} holds no chunk key: no deduplicated backup was "
                    "written there",
                    stage="verify",
                ) from None
            found.append(None)
    key = _same_key(members, found)
    for member, held in zip(members, found, strict=True):
        if held is None:
            key = _store_key(member, key, encrypted, recipients, identities)
            _same_key(members, [key, *(k for k in found if k is not None)])
    assert key is not None  # every member had a key or was given one
    return [ChunkStore(member, key, encrypted) for member in members]


def _same_key(members: list[Storage], keys: list[bytes | None]) -> bytes | None:
    """The one key among ``keys`` (None: none yet). Raises StorageError when they differ."""
    distinct = list(dict.fromkeys(key for key in keys if key is not None))
    if len(distinct) > 1:
        raise StorageError(
            f"the destinations {' and '.join(m.describe() for m in members)} hold different "
            "chunk keys (each had deduplicated backups of its own): a backup to several "
            "destinations needs one key; back up to a new, empty destination instead of one "
            "of them",
            transient=False,
        )
    return distinct[0] if distinct else None


def _store_key(
    storage: Storage,
    key: bytes | None,
    encrypted: bool,
    recipients: list[Any] | None,
    identities: list[Any] | None,
) -> bytes:
    """Store ``key`` (None: a new random one) as the chunk key of ``storage``, for backups
    encrypted (``recipients``) or not, create-only; returns the key the store then holds (a
    concurrent first backup may win the race: its key is read back).

    Encrypted and unencrypted backups have keys of their own, so their chunks never share a
    name: an encrypted backup never refers to a chunk stored in clear.
    """
    key = key if key is not None else secrets.token_bytes(32)
    record = json.dumps({"format": KEY_FORMAT, "key": key.hex()}).encode()
    if encrypted:
        created = storage.create_small(ENCRYPTED_KEY, pyrage.encrypt(record, recipients or []))
    else:
        created = storage.create_small(PLAIN_KEY, record)
    if created:
        return key
    try:
        return _read_key(storage, identities, encrypted)
    except FileNotFoundError:
        raise StorageError(f"cannot read or create the chunk key in {storage.describe()}") from None


def _read_key(storage: Storage, identities: list[Any] | None, encrypted: bool) -> bytes:
    """Read the chunk key; raises FileNotFoundError when there is none."""
    if not encrypted:
        record = storage.get_small(PLAIN_KEY)
    else:
        sealed = storage.get_small(ENCRYPTED_KEY)  # FileNotFoundError: no key yet
        if not identities:
            raise ConfigError(
                [
                    f"the chunk key of {storage.describe()} is encrypted: set "
                    "ENCRYPTION_IDENTITY_FILE on this machine so deduplicated backups can "
                    "name their chunks"
                ]
            )
        try:
            record = pyrage.decrypt(sealed, identities)
        except pyrage.DecryptError:
            raise ConfigError(
                [
                    f"ENCRYPTION_IDENTITY_FILE cannot decrypt the chunk key of "
                    f"{storage.describe()}: it holds none of the keys the backups were "
                    "encrypted to"
                ]
            ) from None
    try:
        data = json.loads(record)
        if data.get("format") != KEY_FORMAT:
            raise ValueError(data.get("format"))
        return bytes.fromhex(data["key"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StorageError(
            f"the chunk key in {storage.describe()} is unreadable", transient=False
        ) from None
