"""What a database's backups take in storage, and what deduplication saves, for metrics and
the weekly summary.

Stored bytes are what the destination holds for the kept backups: each data file (a single
file, or a deduplicated backup's index) plus, when there are deduplicated backups, every chunk
of the chunk store. The deduplication ratio compares that with what the same backups would
take if each were stored on its own: a single file's size, or a deduplicated backup's index
plus the stored size of every chunk it references. Compression counts on both sides, so the
ratio is deduplication's saving alone: 1 for single-file backups, and "30 daily backups in the
space of 4" reads as 7.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bakup.catalog import DEDUP, Backup
from bakup.dedup.chunks import CHUNK_NAME
from bakup.storage.base import Storage


@dataclass(frozen=True)
class StorageUsage:
    """The bytes one destination holds for a database's kept backups (``stored_bytes``) and
    the bytes those backups would take stored each on its own (``unshared_bytes``)."""

    stored_bytes: int
    unshared_bytes: int

    @property
    def dedup_ratio(self) -> float:
        """unshared / stored: 1.0 when nothing is shared (or nothing is stored)."""
        if self.stored_bytes <= 0:
            return 1.0
        return self.unshared_bytes / self.stored_bytes


def measure_usage(
    storage: Storage, backups: Sequence[Backup], chunk_bytes: int | None = None
) -> StorageUsage:
    """Return what the kept ``backups`` of one destination ``storage`` take.

    ``chunk_bytes`` is the chunk store's stored size when the caller already listed it (a
    prune's chunk collection); otherwise the chunk store is listed, and only when one of the
    backups is deduplicated. Raises StorageError when it cannot be listed.
    """
    files = sum(backup.size_bytes for backup in backups)
    unshared = sum(_alone(backup) for backup in backups)
    if chunk_bytes is None:
        dedup = any(backup.backup_format == DEDUP for backup in backups)
        chunk_bytes = stored_chunk_bytes(storage) if dedup else 0
    return StorageUsage(stored_bytes=files + chunk_bytes, unshared_bytes=unshared)


def stored_chunk_bytes(storage: Storage) -> int:
    """The stored size of every chunk in ``storage``'s chunk stores (one listing each).
    Raises StorageError."""
    return sum(
        size
        for chunks in storage.chunk_storages()
        for name, size in chunks.list_sizes().items()
        if CHUNK_NAME.match(name)
    )


def one_destination(storage: Storage) -> Storage:
    """The destination whose usage is reported when ``storage`` has several (each holds a
    full copy): the last, as a prune reports each in turn and the last one's figures stay."""
    members: list[Storage] | None = getattr(storage, "members", None)
    return members[-1] if members else storage


def _alone(backup: Backup) -> int:
    """What ``backup`` would take stored on its own."""
    referenced = (backup.dedup or {}).get("referenced_bytes")
    if backup.backup_format == DEDUP and isinstance(referenced, int):
        return backup.size_bytes + referenced
    return backup.size_bytes
