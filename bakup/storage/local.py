"""A local directory as backup storage: the original script's BACKUP_DIR.

Data is written to a hidden ``.<name>.partial`` file, fsynced and published under its final
name with ``link`` (which, unlike ``rename``, never replaces an existing file); the directory
is fsynced so the publication survives a crash. The writer holds an exclusive ``flock`` on its
file until it is closed, so even a leftover whose claim is gone is removed only once no live
process holds it. Files are created 0600 and the directory 0700: backups hold customers' data.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import threading
import time
from pathlib import Path
from typing import BinaryIO

from bakup.errors import StorageError
from bakup.storage.base import CHUNKS_FOLDER, Storage, StoredWriter

PARTIAL_SUFFIX = ".partial"
# ``_write_small``'s temporary files: .<name>.<pid>.<thread>.partial
TEMPORARY_PATTERN = re.compile(r"^\..+\.\d+\.\d+\.partial$")
TEMPORARY_MIN_AGE_SECONDS = 60.0


def describe_os_error(error: OSError, path: Path | str) -> str:
    """Return a one-line explanation of ``error`` on ``path`` with what to do about it."""
    if error.errno == errno.ENOSPC:
        return (
            f"no space left on the device holding {path}: free space or point BACKUP_DIR elsewhere"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path} is not writable ({error.strerror}): fix its permissions or set BACKUP_DIR"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        # mkdir says EEXIST when BACKUP_DIR itself is a file, ENOTDIR when a parent is one.
        blocker = _file_in_the_way(Path(path))
        if blocker == Path(path):
            return f"BACKUP_DIR {path} is a file, not a directory: point BACKUP_DIR at a directory"
        if blocker is not None:
            return (
                f"BACKUP_DIR {path}: {blocker} is a file, not a directory: "
                "point BACKUP_DIR at a directory"
            )
    return f"{path}: {error.strerror or error}"


def _file_in_the_way(path: Path) -> Path | None:
    """Return ``path`` or its nearest ancestor that exists but is not a directory (None if
    there is none: the error came from something else)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


class LocalWriter(StoredWriter):
    """Writes one backup file atomically into a local directory."""

    def __init__(self, directory: Path, name: str) -> None:
        self.final_path = directory / name
        self.partial_path = directory / f".{name}{PARTIAL_SUFFIX}"
        self._directory = directory
        try:
            descriptor = os.open(
                self.partial_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except OSError as error:
            raise StorageError(describe_os_error(error, directory), stage="store") from None
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        self._file = os.fdopen(descriptor, "wb", buffering=0)
        self._committed = False

    def write(self, data: bytes) -> int:
        try:
            view = memoryview(data)
            while view:
                written = self._file.write(view)
                view = view[written:]
        except OSError as error:
            raise StorageError(describe_os_error(error, self._directory), stage="store") from None
        return len(data)

    def commit(self) -> None:
        try:
            os.fsync(self._file.fileno())
            # link, not rename: a file already published under this name is never replaced.
            os.link(self.partial_path, self.final_path)
            self._committed = True
            os.unlink(self.partial_path)
            _fsync_directory(self._directory)
        except FileExistsError:
            raise StorageError(
                f"{self.final_path} already exists", stage="store", transient=False
            ) from None
        except OSError as error:
            raise StorageError(describe_os_error(error, self._directory), stage="store") from None

    def abort(self) -> None:
        # Only the run that still holds its claim calls this: what it published is its own.
        paths = (self.partial_path, self.final_path) if self._committed else (self.partial_path,)
        for path in paths:
            with contextlib.suppress(OSError):
                path.unlink()
        self.close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()  # also releases the flock


class LocalStorage(Storage):
    """Backups as files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return str(self.directory)

    def prepare(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = self.directory / f".write-test-{os.getpid()}"
            with open(probe, "wb"):
                pass
            probe.unlink()
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory), stage="store") from None

    def open_writer(self, name: str) -> LocalWriter:
        if (self.directory / name).exists():
            raise StorageError(
                f"{self.directory / name} already exists", stage="store", transient=False
            )
        return LocalWriter(self.directory, name)

    def create_small(self, name: str, data: bytes) -> bool:
        return self._write_small(name, data, replace=False)

    def put_small(self, name: str, data: bytes) -> None:
        self._write_small(name, data, replace=True)

    def create_object(self, name: str, data: bytes) -> bool:
        # The file is fsynced; the folder once, by sync(): one journal commit for many chunks.
        return self._write_small(name, data, replace=False, sync_directory=False)

    def sync(self) -> None:
        try:
            _fsync_directory(self.directory)
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory), stage="store") from None

    def _write_small(
        self, name: str, data: bytes, *, replace: bool, sync_directory: bool = True
    ) -> bool:
        """Write ``data`` to a private temporary file, fsync it, then give it its name:
        ``rename`` replaces, ``link`` fails if the name exists (an atomic claim). Returns
        whether the name now holds ``data``. Raises StorageError."""
        path = self.directory / name
        # Unique per writer: a claim's lease renewal and another run may write at once.
        partial = self.directory / f".{name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            descriptor = os.open(partial, flags, 0o600)
            # Held until the file is renamed or removed: the sweep removes only temporaries
            # no live writer holds (see discard_abandoned_temporaries).
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                os.replace(partial, path)
            else:
                try:
                    os.link(partial, path)
                except FileExistsError:
                    return False
                finally:
                    partial.unlink(missing_ok=True)
            if sync_directory:
                _fsync_directory(self.directory)
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory), stage="manifest") from None
        finally:
            # Whatever stopped it (an error, SIGTERM's exception mid-write): no temporary file
            # is left; after a rename or link it is already gone.
            with contextlib.suppress(OSError):
                partial.unlink()
        return True

    def append_small(self, name: str, data: bytes) -> None:
        path = self.directory / name
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "ab") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory), stage="store") from None

    def get_small(self, name: str) -> bytes:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory / name)) from None

    def open_reader(self, name: str) -> BinaryIO:
        try:
            return open(self.directory / name, "rb")
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory / name)) from None

    def size(self, name: str) -> int:
        try:
            return (self.directory / name).stat().st_size
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory / name)) from None

    def list_names(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self._entries()
            if entry.is_file() and not entry.name.startswith(".")
        )

    def list_sizes(self) -> dict[str, int]:
        sizes = {}
        for entry in self._entries():
            if not entry.is_file() or entry.name.startswith("."):
                continue
            try:
                sizes[entry.name] = entry.stat().st_size
            except FileNotFoundError:
                continue  # deleted since the folder was read: not there any more
            except OSError as error:
                raise StorageError(describe_os_error(error, self.directory)) from None
        return sizes

    def chunk_storages(self) -> list[Storage]:
        return [LocalStorage(self.directory / CHUNKS_FOLDER)]

    def delete(self, name: str) -> None:
        try:
            (self.directory / name).unlink(missing_ok=True)
        except OSError as error:
            raise StorageError(
                describe_os_error(error, self.directory / name), stage="prune"
            ) from None

    def _entries(self) -> list[os.DirEntry[str]]:
        """The folder's entries (none when it does not exist). Raises StorageError."""
        try:
            return list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StorageError(describe_os_error(error, self.directory)) from None

    def unfinished_names(self) -> list[str]:
        return sorted(
            entry.name[1 : -len(PARTIAL_SUFFIX)]
            for entry in self._entries()
            if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX)
        )

    def discard_unfinished(self, name: str) -> bool:
        return _unlink_unless_locked(self.directory / f".{name}{PARTIAL_SUFFIX}")

    def discard_abandoned_temporaries(self) -> list[str]:
        removed = []
        now = time.time()
        for entry in self._entries():
            if not TEMPORARY_PATTERN.match(entry.name):
                continue
            path = self.directory / entry.name
            try:
                # A writer creates its file, then locks it: the age closes that tiny window,
                # the lock says whether the writer is still alive.
                if now - entry.stat().st_mtime < TEMPORARY_MIN_AGE_SECONDS:
                    continue
            except FileNotFoundError:
                continue  # renamed into place meanwhile
            except OSError as error:
                raise StorageError(describe_os_error(error, path), stage="prune") from None
            if _unlink_unless_locked(path):
                removed.append(entry.name)
        return removed


def _unlink_unless_locked(path: Path) -> bool:
    """Delete ``path`` unless a live process holds its flock (its writer does while it
    writes). Returns whether it was deleted: False when it is gone already or still held.
    Raises StorageError."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise StorageError(describe_os_error(error, path), stage="prune") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(descriptor)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
