"""Reading a deduplicated backup: its index, then its chunks in order, as one archive stream.

Restore, verify and ``bakup export`` read a deduplicated backup through the same stream
interface as a single-file one (``open_backup_archive``): the caller still hashes the stored
data file (here the index) against the manifest, and every chunk is checked against its name
(a keyed hash of its plaintext) as it is read. A few chunks are fetched ahead, so a remote
store's latency overlaps the consumer's work.
"""

from __future__ import annotations

import io
import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import zstandard

from bakup.catalog import Backup
from bakup.compression import get_compression
from bakup.dedup.chunks import AGE_MAGIC, ChunkError, ChunkStore, open_chunk_stores
from bakup.dedup.writer import INDEX_FORMAT
from bakup.encryption import open_archive
from bakup.errors import StorageError
from bakup.storage.base import Storage

DEDUP = "dedup"
READ_AHEAD = 8


def read_index(data: bytes, name: str) -> list[tuple[str, int]]:
    """Return the (chunk name, length) pairs of backup ``name``'s index file ``data`` (never
    encrypted: see bakup.dedup.writer). Raises ChunkError when it does not decompress or
    parse."""
    try:
        index = json.loads(zstandard.ZstdDecompressor().decompress(data))
        if index.get("format") != INDEX_FORMAT:
            raise ValueError(index.get("format"))
        return [(str(chunk), int(length)) for chunk, length in index["chunks"]]
    except (ValueError, KeyError, TypeError, AttributeError, zstandard.ZstdError):
        raise ChunkError(f"the index of {name} is unreadable (corrupted)", stage="verify") from None


def fetch_chunk(
    stores: list[ChunkStore], name: str, identities: list[Any] | None, *, every: bool = False
) -> bytes:
    """Return chunk ``name`` from the first destination that has it intact. Raises the last
    destination's ChunkError (or StorageError) when none has.

    With ``every`` (verification), the chunk is read and checked in every destination, and the
    first that lacks it or holds it damaged raises, naming that destination: a restore may
    fall back on another copy, a verification must report the bad one."""
    if every:
        found = [store.get(name, identities) for store in stores]
        return found[0]
    failure: Exception | None = None
    for store in stores:
        try:
            return store.get(name, identities)
        except (ChunkError, StorageError) as error:
            failure = error
    assert failure is not None
    raise failure


class DedupReader(io.RawIOBase):
    """The archive of a deduplicated backup, reassembled from its chunks."""

    def __init__(
        self,
        stores: list[ChunkStore],
        index: list[tuple[str, int]],
        identities: list[Any] | None,
        *,
        every: bool = False,
    ) -> None:
        self._stores = stores
        self._identities = identities
        self._every = every
        self._names: Iterator[tuple[str, int]] = iter(index)
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="bakup-read-chunks")
        self._ahead: deque[tuple[int, Future[bytes]]] = deque()
        self._current = memoryview(b"")
        self._fill()

    def _fill(self) -> None:
        while len(self._ahead) < READ_AHEAD:
            entry = next(self._names, None)
            if entry is None:
                return
            name, length = entry
            self._ahead.append(
                (
                    length,
                    self._pool.submit(
                        fetch_chunk, self._stores, name, self._identities, every=self._every
                    ),
                )
            )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            if not self._ahead:
                return 0
            length, future = self._ahead.popleft()
            data = future.result()
            if len(data) != length:
                raise ChunkError("a chunk's length differs from its index entry", stage="verify")
            self._current = memoryview(data)
            self._fill()
        size = min(len(buffer), len(self._current))
        buffer[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()


def missing_chunks(storage: Storage, backup: Backup) -> tuple[int, list[tuple[str, list[str]]]]:
    """Check that every chunk ``backup``'s index names is in every destination, from one
    listing each (nothing is read). Returns the number of distinct chunks and, for each
    destination missing some, its description and the missing names. Raises ChunkError when
    the index is unreadable, StorageError when the storage fails."""
    names = {name for name, _ in read_index(storage.get_small(backup.name), backup.name)}
    missing = []
    for chunks in storage.chunk_storages():
        held = set(chunks.list_names())
        absent = sorted(names - held)
        if absent:
            missing.append((chunks.describe(), absent))
    return len(names), missing


def _chunks_encrypted(storage: Storage, index: list[tuple[str, int]]) -> bool:
    """Whether the first chunk of ``index`` is age-encrypted (False when there is none)."""
    if not index:
        return False
    for chunks in storage.chunk_storages():
        try:
            return chunks.get_small(index[0][0]).startswith(AGE_MAGIC)
        except FileNotFoundError:
            continue
    return False


def open_backup_archive(
    storage: Storage,
    backup: Backup,
    stored: BinaryIO,
    identities: list[Any] | None,
    *,
    every_destination: bool = False,
) -> BinaryIO:
    """Return the pg_dump archive of ``backup`` given its stored data file's stream
    ``stored`` (the caller may hash it on the way): decrypted and decompressed for a
    single-file backup, reassembled from its chunks for a deduplicated one. With
    ``every_destination`` (verification), each chunk is read and checked in every destination,
    not only in the first that holds it intact.

    Raises ConfigError / EncryptionError when it cannot be decrypted, ChunkError when the
    index or a chunk is missing or damaged, StorageError when the storage fails.
    """
    if backup.backup_format != DEDUP:
        return open_archive(
            stored,
            encrypted=backup.encrypted,
            compression=get_compression(backup.compression),
            identities=identities,
        )
    index = read_index(stored.read(), backup.name)
    # A backup without its manifest (adopted) does not record encryption: its chunks show it.
    encrypted = backup.encrypted or _chunks_encrypted(storage, index)
    stores = open_chunk_stores(
        storage, encrypted=encrypted, identities=identities if encrypted else None
    )
    return io.BufferedReader(
        DedupReader(stores, index, identities, every=every_destination), 1 << 20
    )
