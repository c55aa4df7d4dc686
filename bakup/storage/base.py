"""The small interface every storage backend implements.

A backend stores named objects. Data objects are written through a StoredWriter that makes them
visible under their final name only on ``commit`` (publish); manifests are small objects
written whole and atomically, either unconditionally (``put_small``: update a record) or only
if absent (``create_small``: claim a name). What each record means, and who may delete what, is
in ``bakup.lifecycle`` and docs/backup-lifecycle.md: a backend never decides on its own that
something is abandoned.
"""

from __future__ import annotations

import abc
from collections.abc import Collection
from typing import BinaryIO

from bakup.errors import StorageError

# Where a destination keeps deduplicated backups' chunks: a folder or prefix beside the backups.
CHUNKS_FOLDER = "chunks"


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
    def create_small(self, name: str, data: bytes) -> bool:
        """Atomically write a small object only if nothing has that name yet.

        Returns False (and changes nothing) when ``name`` already exists. Raises
        StorageError."""

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

    def create_object(self, name: str, data: bytes) -> bool:
        """Like ``create_small``, for one of many objects written in a row (chunks): the name
        may become durable only at the next ``sync``. Raises StorageError."""
        return self.create_small(name, data)

    def sync(self) -> None:  # noqa: B027 - object stores are durable on each write
        """Make every ``create_object`` so far durable. Raises StorageError."""

    def list_sizes(self) -> dict[str, int]:
        """Return each finished object's stored size, by name. Raises StorageError."""
        return {name: self.size(name) for name in self.list_names()}

    def chunk_storages(self) -> list[Storage]:
        """Return, for each destination, the storage that holds its deduplicated chunks (a
        ``chunks`` folder or prefix beside the backups). Raises StorageError."""
        raise StorageError(f"{self.describe()} cannot hold deduplicated backups", transient=False)

    def unfinished_names(self) -> list[str]:
        """Return the names of data objects whose writing never finished and left something
        behind that ``discard_unfinished`` can remove. Raises StorageError."""
        return []

    def discard_unfinished(self, name: str) -> bool:
        """Remove what an unfinished write of ``name`` left, unless a live writer still holds
        it. Only ``bakup.lifecycle`` calls this, for a claim it proved dead (or absent).
        Returns whether something was removed. Raises StorageError."""
        return False

    def discard_abandoned_temporaries(self) -> list[str]:
        """Remove the temporary files of small writes (manifests, chunks) whose writer died
        mid-write, where the storage has such files; never one a live writer holds. Returns
        the names of the files removed. Raises StorageError."""
        return []

    def abort_abandoned_uploads(
        self, live: Collection[str] = (), dead: Collection[str] = ()
    ) -> list[str]:
        """Abort the incomplete multipart uploads of runs that died mid-upload, where the
        store keeps them: at once for the names in ``dead`` (claims proved dead), after a
        quiet period for uploads no claim explains, never for the names in ``live``. A
        failure to is logged, not raised. Returns what was aborted."""
        return []
