"""Where backups are kept: one module per backend behind the interface in ``base``."""

from __future__ import annotations

from pathlib import Path

from bakup.storage.base import Storage, StoredWriter
from bakup.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StoredWriter", "open_storage"]


def open_storage(backup_dir: Path) -> Storage:
    """Return the storage backend for the configured destination (a local directory for now)."""
    return LocalStorage(backup_dir)
