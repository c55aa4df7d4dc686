"""Several destinations at once, such as a local disk for fast restores and a bucket that
survives the machine. Every backup is written to all of them in the same pass; it counts as
complete only when every destination holds it (data and manifest); reads come from the first
destination that has the object. Retention runs on each destination by itself (see
bakup.actions.run_prune)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import BinaryIO

from bakup.errors import StorageError
from bakup.storage.base import Storage, StoredWriter


class MultiWriter(StoredWriter):
    """Writes one data object to every destination."""

    def __init__(self, writers: list[StoredWriter]) -> None:
        self.writers = writers

    def write(self, data: bytes) -> int:
        for writer in self.writers:
            writer.write(data)
        return len(data)

    def commit(self) -> None:
        for writer in self.writers:
            writer.commit()

    def abort(self) -> None:
        for writer in self.writers:
            writer.abort()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class MultiStorage(Storage):
    """The destinations of STORAGE_URL, in order."""

    def __init__(self, members: list[Storage]) -> None:
        self.members = members

    def describe(self) -> str:
        return " + ".join(member.describe() for member in self.members)

    def prepare(self) -> None:
        for member in self.members:
            member.prepare()

    def open_writer(self, name: str) -> MultiWriter:
        writers: list[StoredWriter] = []
        try:
            for member in self.members:
                writers.append(member.open_writer(name))
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        return MultiWriter(writers)

    def put_small(self, name: str, data: bytes) -> None:
        # No rollback: this replaces a record (a claim's lease, a verification) in each
        # destination, and deleting the ones already written would destroy good records.
        # A destination that failed keeps its previous record and the error is raised.
        for member in self.members:
            member.put_small(name, data)

    def create_small(self, name: str, data: bytes) -> bool:
        created: list[Storage] = []
        try:
            for member in self.members:
                if not member.create_small(name, data):
                    break
                created.append(member)
            else:
                return True
        except BaseException:
            self._withdraw(created, name)
            raise
        self._withdraw(created, name)
        return False

    @staticmethod
    def _withdraw(created: list[Storage], name: str) -> None:
        """Delete the claims this call itself just created: nobody else owns them."""
        for member in created:
            with contextlib.suppress(StorageError):
                member.delete(name)

    def append_small(self, name: str, data: bytes) -> None:
        for member in self.members:
            member.append_small(name, data)

    def get_small(self, name: str) -> bytes:
        for member in self.members:
            try:
                return member.get_small(name)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(name)

    def open_reader(self, name: str) -> BinaryIO:
        return self._holder(name).open_reader(name)

    def size(self, name: str) -> int:
        return self._holder(name).size(name)

    def _holder(self, name: str) -> Storage:
        for member in self.members:
            if name in member.list_names():
                return member
        raise StorageError(f"{name} is in none of {self.describe()}")

    def list_names(self) -> list[str]:
        """Only what every destination holds."""
        common = set(self.members[0].list_names())
        for member in self.members[1:]:
            common &= set(member.list_names())
        return sorted(common)

    def chunk_storages(self) -> list[Storage]:
        """Each destination keeps its own chunks: one per member."""
        return [store for member in self.members for store in member.chunk_storages()]

    def delete(self, name: str) -> None:
        for member in self.members:
            member.delete(name)

    def abort_abandoned_uploads(
        self, live: Collection[str] = (), dead: Collection[str] = ()
    ) -> list[str]:
        return [
            name for member in self.members for name in member.abort_abandoned_uploads(live, dead)
        ]
