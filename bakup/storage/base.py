"""The small interface every storage backend implements.

A backend stores named objects. Data objects are written through a StoredWriter that makes them
visible only on ``commit``; manifests are small objects written whole and atomically. A backup
exists for bakup when both its data and its manifest are there (see ``bakup.catalog``).
"""

from __future__ import annotations

import abc
from typing import BinaryIO


class StoredWriter(abc.ABC):
    """A data object being written: invisible under its final name until ``commit``."""

    @abc.abstractmethod
    def write(self, data: bytes) -> int:
        """Append ``data``; returns its length. Raises StorageError."""

    def flush(self) -> None:  # noqa: B027 - deliberately a no-op that backends may refine
        """Accept a flush from a stream layered on top (data is made durable by ``commit``)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make the object durable and visible under its final name. Raises StorageError."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard what was written. Never raises."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the writer; after ``commit`` this ends the claim on an unfinished backup."""


class Storage(abc.ABC):
    """A place that holds backups: a local directory, or (later) an object store."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Return where this storage is, without secrets, for logs and messages."""

    @abc.abstractmethod
    def prepare(self) -> None:
        """Create the destination if needed and check it can be written. Raises StorageError."""

    @abc.abstractmethod
    def open_writer(self, name: str) -> StoredWriter:
        """Start writing the data object ``name``. Raises StorageError if it already exists."""

    @abc.abstractmethod
    def put_small(self, name: str, data: bytes) -> None:
        """Atomically write (or replace) a small object such as a manifest. Raises StorageError."""

    @abc.abstractmethod
    def append_small(self, name: str, data: bytes) -> None:
        """Append ``data`` to a small object such as the run journal. Raises StorageError."""

    @abc.abstractmethod
    def get_small(self, name: str) -> bytes:
        """Return a small object's bytes. Raises StorageError (FileNotFoundError if missing)."""

    @abc.abstractmethod
    def open_reader(self, name: str) -> BinaryIO:
        """Return a binary stream of the object ``name``. Raises StorageError."""

    @abc.abstractmethod
    def size(self, name: str) -> int:
        """Return the stored size of ``name`` in bytes. Raises StorageError."""

    @abc.abstractmethod
    def list_names(self) -> list[str]:
        """Return the names of all finished objects. Raises StorageError."""

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete ``name`` if it exists. Raises StorageError."""

    @abc.abstractmethod
    def clean_abandoned(self, is_complete: dict[str, bool]) -> list[str]:
        """Delete what interrupted runs left: unfinished writes and data objects whose
        manifest never came (``is_complete`` maps each data object to whether it has one),
        skipping anything a live writer still holds. Returns what was deleted."""

    def abort_abandoned_uploads(self) -> list[str]:
        """Abort the incomplete multipart uploads of runs that died mid-upload, where the
        store keeps them; a failure to is logged, not raised. Returns what was aborted."""
        return []
