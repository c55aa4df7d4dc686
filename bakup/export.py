"""``bakup export NAME``: any backup as the classic single file, ``gunzip`` + ``pg_restore``.

A deduplicated backup is reassembled from its chunks (each checked against its name) and an
encrypted one decrypted; the archive is written gzip-compressed, as the original script's
``postgres_backup_YYYYMMDD_HHMMSS.sql.gz`` was, to a file or to standard output. The stored
index or file is checked against the manifest's sha256 as it is read: a damaged backup fails
the export, and a file being written is deleted rather than left half done.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bakup.catalog import Backup
from bakup.compression import get_compression
from bakup.dedup.reader import open_backup_archive
from bakup.local_copy import READ_SIZE, HashingReader, check_read
from bakup.storage.base import Storage


def export_name(backup: Backup) -> str:
    """The classic file name for ``backup``: ``postgres_backup_YYYYMMDD_HHMMSS.sql.gz``."""
    return backup.name.split(".sql", 1)[0] + ".sql.gz"


def export_backup(
    storage: Storage, backup: Backup, output: BinaryIO, identities: list[Any] | None
) -> int:
    """Write ``backup``'s archive, gzip-compressed, to ``output``; returns the archive's size.

    Raises ChecksumMismatch (local_copy.check_read) when the stored data does not match the
    manifest, ChunkError when
    a chunk is missing or damaged, ConfigError / EncryptionError when it cannot be decrypted,
    StorageError when the storage fails."""
    size = 0
    with storage.open_reader(backup.name) as stored:
        hashing = HashingReader(stored)
        archive = open_backup_archive(storage, backup, io.BufferedReader(hashing), identities)
        compressor = get_compression("gzip").open_writer(output)
        try:
            while chunk := archive.read(READ_SIZE):
                compressor.write(chunk)
                size += len(chunk)
        finally:
            archive.close()
        compressor.close()
        while hashing.read(READ_SIZE):  # the whole stored file counts in its checksum
            pass
    check_read(backup, hashing)
    return size


@contextlib.contextmanager
def output_file(path: Path) -> Iterator[BinaryIO]:
    """A file written under a temporary name beside ``path`` and renamed to it only when the
    block ends normally; removed otherwise. Raises OSError."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def sha256_of(path: Path) -> str:
    """The sha256 of a file (for the export's log line)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
    return digest.hexdigest()
