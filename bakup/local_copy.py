"""A seekable local copy of a backup's pg_dump archive, for ``pg_restore --jobs``.

``pg_restore --jobs`` reads a file, not a stream. bakup writes the archive decrypted and
decompressed to a temporary file, checking the stored bytes' sha256 as they pass (so no
separate read is needed), and parses the archive as it goes. pg_dump wrote the archive to a
pipe, so its table of contents says "position not set" for every data block: without
positions each pg_restore worker must read the file from the start to find its table, and
pg_restore cannot schedule the largest tables first. The parser notes where each block
starts; the copy's table of contents is then patched with those positions, exactly as pg_dump
itself writes them when it can seek (a flag byte, then the offset least significant byte
first).

The copy is made only after checking that the free space is enough for the archive's size
recorded in the manifest, and it is deleted when the restore ends, whatever happens. A
restore killed outright cannot delete it: the copy's name records its owner (pid and the pid's
start time), and the next restore removes the copies whose owner is provably gone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from bakup.archive import OFFSET_NOT_SET, OFFSET_SET, ArchiveFormatError, ArchiveSummary, RowCounter
from bakup.catalog import Backup
from bakup.dedup.reader import open_backup_archive
from bakup.errors import BakupError, ChecksumMismatch, RestoreError
from bakup.lifecycle import Owner
from bakup.storage.base import Storage

READ_SIZE = 1 << 20
COPY_PREFIX = ".bakup-restore-"
# Room kept free beyond the archive itself, so the copy never fills the disk to the last byte.
SPACE_MARGIN = 64 << 20


class HashingReader(io.RawIOBase):
    """Hashes and counts the stored bytes as the decompressor pulls them."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        self.digest.update(data)
        self.size += len(data)
        buffer[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class LocalCopy:
    """The archive on local disk, its size and what its table of contents holds."""

    path: Path
    size: int
    summary: ArchiveSummary
    patched: int  # how many data positions were written into the table of contents


def copy_directory() -> Path:
    """Where local copies go: TMPDIR (the system's temporary directory by default)."""
    return Path(tempfile.gettempdir())


def check_space(backup: Backup, directory: Path) -> None:
    """Raise RestoreError, saying how much is needed and how much is free, when ``directory``
    cannot hold the backup's archive (its size as the manifest records it)."""
    needed = backup.raw_size_bytes + SPACE_MARGIN
    free = shutil.disk_usage(directory).free
    if backup.raw_size_bytes and free < needed:
        raise RestoreError(
            f"a parallel restore needs {_size(needed)} free in {directory} for a local copy "
            f"of the archive, and {_size(free)} is free: free some space, point TMPDIR at a "
            "larger disk, or restore with --jobs 1 (streamed, no copy)",
            stage="restore",
        )


@contextlib.contextmanager
def local_copy(
    storage: Storage,
    backup: Backup,
    identities: list[Any] | None,
    *,
    directory: Path | None = None,
    progress: Callable[[int, str | None], None] | None = None,
) -> Iterator[LocalCopy]:
    """Write ``backup``'s archive to a temporary file and give it; the file is deleted when
    the block ends, whatever happens.

    ``progress`` is called with the archive bytes written and the table being written. Raises
    RestoreError when the disk is too small or fills up, ChecksumMismatch when the stored bytes
    do not match the manifest, StorageError when they cannot be read, EncryptionError /
    ConfigError when they cannot be decrypted.
    """
    directory = directory or copy_directory()
    remove_abandoned_copies(directory)
    check_space(backup, directory)
    path: Path | None = None
    owner = Owner.current()
    try:
        # The name records its owner (pid and the pid's start time): a copy whose owner is
        # provably gone belongs to a killed restore, and only such a copy is ever removed.
        with tempfile.NamedTemporaryFile(
            prefix=f"{COPY_PREFIX}{owner.pid}-{owner.started}-",
            suffix=".dump",
            dir=directory,
            delete=False,
        ) as handle:
            path = Path(handle.name)
            summary, size = _write(storage, backup, identities, handle, progress)
            patched = patch_offsets(handle, summary)
        yield LocalCopy(path, size, summary, patched)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise RestoreError(
                f"{directory} filled up while writing the local copy of {backup.name} "
                f"({_size(backup.raw_size_bytes)} needed): free space, point TMPDIR at a larger "
                "disk, or restore with --jobs 1",
                stage="restore",
            ) from None
        raise
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def remove_abandoned_copies(directory: Path) -> list[Path]:
    """Delete the local copies in ``directory`` whose restore is provably gone (killed before
    it could delete its own). Returns the paths removed; never raises for a copy it cannot
    remove."""
    here = Owner.current()  # this machine and boot: the copies in a local TMPDIR are its own
    removed = []
    for path in directory.glob(f"{COPY_PREFIX}*.dump"):
        pid, _, rest = path.name.removeprefix(COPY_PREFIX).partition("-")
        started, _, _ = rest.partition("-")
        if not pid.isdigit() or not started.isdigit():
            continue  # not named by a restore of this version: not ours to judge
        if not Owner(here.host, here.boot_id, int(pid), int(started)).is_gone():
            continue
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _write(
    storage: Storage,
    backup: Backup,
    identities: list[Any] | None,
    handle: IO[bytes],
    progress: Callable[[int, str | None], None] | None,
) -> tuple[ArchiveSummary, int]:
    """Copy the archive into ``handle`` while hashing the stored bytes and parsing the
    archive; returns the summary and the archive's size."""
    counter = RowCounter()
    size = 0
    with storage.open_reader(backup.name) as stored:
        hashing = HashingReader(stored)
        stream = open_backup_archive(
            storage, backup, io.BufferedReader(hashing, READ_SIZE), identities
        )
        try:
            while chunk := stream.read(READ_SIZE):
                handle.write(chunk)
                counter.feed(chunk)
                size += len(chunk)
                if progress is not None:
                    progress(len(chunk), counter.current_table)
        except BakupError:
            raise
        except Exception as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise  # the disk or the storage, not the data
            # The data does not decompress: hash the rest, as damage is best named by the
            # checksum.
            while hashing.read(READ_SIZE):
                pass
            check_read(backup, hashing)
            raise RestoreError(
                f"{backup.name} does not decompress as {backup.compression} ({error}): "
                "restore an older backup",
                stage="restore",
            ) from None
        finally:
            stream.close()
    check_read(backup, hashing)
    try:
        summary = counter.finish()
    except ArchiveFormatError as error:
        raise RestoreError(
            f"{backup.name} is not a whole archive: {error}", stage="restore"
        ) from None
    return summary, size


def check_read(backup: Backup, hashing: HashingReader) -> None:
    """Raise ChecksumMismatch when the stored bytes ``hashing`` read (all of them) differ from
    what the manifest records; an adopted backup not yet described has nothing to compare."""
    if backup.described and (
        hashing.digest.hexdigest() != backup.sha256 or hashing.size != backup.size_bytes
    ):
        raise ChecksumMismatch(
            f"checksum mismatch for {backup.name}: the stored file is corrupted "
            f"(sha256 {hashing.digest.hexdigest()[:16]}..., manifest says "
            f"{backup.sha256[:16]}...); restore an older backup",
            stage="verify",
        )


def patch_offsets(handle: IO[bytes], summary: ArchiveSummary) -> int:
    """Write each data block's position into the table of contents of the archive in
    ``handle`` (a file open for writing), for entries whose position pg_dump could not set.
    Returns how many were written."""
    patched = 0
    for entry in summary.entries:
        position = summary.block_positions.get(entry.dump_id)
        if position is None or entry.offset_flag != OFFSET_NOT_SET:
            continue
        handle.seek(entry.offset_position)
        handle.write(bytes((OFFSET_SET,)) + position.to_bytes(summary.offset_size, "little"))
        patched += 1
    handle.flush()
    return patched


def _size(count: int) -> str:
    """A byte count for people: 1.2 GB, 340 MB."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "kB", "MB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"
