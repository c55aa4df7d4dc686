"""The streaming pipeline: pg_dump -> row counter -> compressor -> sha256 -> storage, in one pass.

pg_dump writes an uncompressed custom-format archive to a pipe. Each block read from the pipe is
fed to the row counter (bakup.archive) and the compressor; the compressor's output is hashed and
written to storage under a temporary name. Nothing uncompressed touches disk and memory stays
flat whatever the database's size. The file becomes visible only when pg_dump exited 0, the
archive is complete and the data is fsynced; anything else discards it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakup.archive import ArchiveFormatError, ArchiveSummary, RowCounter
from bakup.clients import dump_program
from bakup.compression import get_compression
from bakup.dburl import ConnectionParams
from bakup.dedup.chunks import ChunkStore
from bakup.dedup.writer import DedupStats, DedupWriter
from bakup.encryption import EncryptingWriter
from bakup.errors import DumpError, StorageError
from bakup.pgtools import (
    DEFAULT_LOCK_WAIT_TIMEOUT,
    child_connection,
    diagnose_output,
    die_with_parent,
    lock_wait_timeout,
)
from bakup.progress import Progress
from bakup.storage.base import Storage, StoredWriter

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass(frozen=True)
class DumpResult:
    """What one finished dump produced."""

    name: str
    size_bytes: int
    raw_size_bytes: int
    sha256: str
    duration_seconds: float
    archive: ArchiveSummary
    writer: StoredWriter  # still held: close it once the manifest is written
    dedup: DedupStats | None = None  # a deduplicated backup's figures


class _HashingSink:
    """Hashes and counts the compressed bytes on their way to storage."""

    def __init__(self, writer: StoredWriter) -> None:
        self.writer = writer
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.writer.write(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to do: durability comes from the writer's commit."""

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return False


def pg_dump_command(
    pg_dump: str, conninfo: str, *, lock_wait_seconds: int = DEFAULT_LOCK_WAIT_TIMEOUT
) -> tuple[str, ...]:
    """Return pg_dump's argv: custom format, its own compression off, never a password.

    Given the program, the connection string (free of secrets, see child_connection) and how
    long pg_dump may wait for a table lock (0: for ever); returns the argv.
    """
    return (
        pg_dump,
        "--format=custom",
        "--compress=0",
        "--no-password",
        # Without a limit, a session holding an exclusive lock would stall the run for ever.
        *((f"--lock-wait-timeout={lock_wait_seconds}s",) if lock_wait_seconds else ()),
        f"--dbname={conninfo}",
    )


def dump_to_storage(
    database: ConnectionParams,
    storage: Storage,
    name: str,
    *,
    compression: str = "gzip",
    level: int | None = None,
    pg_bin_dir: Path | None = None,
    recipients: list[Any] | None = None,
    progress: Progress | None = None,  # told the archive's bytes and the table streaming past
    chunk_stores: list[ChunkStore] | None = None,
) -> DumpResult:
    """Dump ``database`` into ``storage`` as ``name``, compressed (and, given age
    ``recipients``, encrypted after compression), in one streaming pass.

    pg_dump is PG_BIN_DIR's (``pg_bin_dir``) when set, else the installed client that serves
    the server (bakup.clients). Returns the result with the storage writer still open (it holds
    the claim on the file until the caller has written the manifest and closes it). Raises
    DumpError when no installed pg_dump is new enough for the server, pg_dump cannot run, fails
    or is killed, or its output is not a complete archive; StorageError when the data cannot be
    written. On any failure nothing is left under ``name``.

    Given ``chunk_stores``, the backup is deduplicated (bakup.dedup.writer): the archive is
    stored as chunks in them and ``name`` holds its index (encrypted like the chunks).
    """
    pg_dump = dump_program(database, pg_bin_dir)
    started = time.monotonic()
    writer = storage.open_writer(name)
    process: subprocess.Popen[bytes] | None = None
    # pg_dump's stderr goes to an unnamed file: no thread needed to drain it, no deadlock.
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    try:
        try:
            with child_connection(database) as connection:
                process = subprocess.Popen(
                    pg_dump_command(
                        pg_dump, connection.conninfo, lock_wait_seconds=lock_wait_timeout()
                    ),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr_file,
                    env=connection.env,
                    pass_fds=connection.pass_fds,
                    preexec_fn=die_with_parent,
                )
        except OSError as error:
            raise DumpError(f"cannot start {pg_dump}: {error.strerror}", stage="dump") from None
        assert process.stdout is not None
        _widen_pipe(process.stdout.fileno())

        sink = _HashingSink(writer)
        counter = RowCounter()
        encryptor: EncryptingWriter | None = None
        compressor: Any
        if chunk_stores is not None:
            # The counter sees each block first, so the chunker knows where tables start.
            compressor = deduplicator = DedupWriter(sink, chunk_stores, counter, recipients)
        else:
            # compress -> (encrypt) -> hash -> store: the checksum covers the stored bytes.
            deduplicator = None
            encryptor = EncryptingWriter(sink, recipients) if recipients else None
            compressor = get_compression(compression).open_writer(encryptor or sink, level)  # type: ignore[arg-type]
        raw_size = 0
        archive_error: ArchiveFormatError | None = None
        read = os.read
        source = process.stdout.fileno()
        try:
            while chunk := read(source, READ_SIZE):
                raw_size += len(chunk)
                if archive_error is None:
                    try:
                        counter.feed(chunk)
                    except ArchiveFormatError as error:
                        archive_error = error  # keep draining so pg_dump can finish and report
                compressor.write(chunk)
                if progress is not None:
                    if table := counter.current_table:
                        progress.set_item(table)
                    progress.advance(len(chunk))
        finally:
            # Closing writes the compressed stream's trailer; on failure it only stops threads.
            try:
                compressor.close()
                if encryptor is not None:
                    encryptor.close()
            except Exception:
                if process.poll() is None:
                    process.kill()
                if deduplicator is not None:
                    deduplicator.abort()
                raise
        returncode = process.wait()
        if returncode != 0:
            failure = diagnose_output(
                "pg_dump", stderr_file, returncode, database.password, variable=database.variable
            )
            raise DumpError(failure.message, stage=failure.stage, transient=failure.transient)
        try:
            if archive_error is not None:
                raise archive_error
            summary = counter.finish()
        except ArchiveFormatError as error:
            raise DumpError(
                f"pg_dump's output is not a complete archive: {error}", stage="dump"
            ) from None
        writer.commit()
    except OSError as error:
        _discard(process, writer)
        raise StorageError(
            f"writing to {storage.describe()} failed: {error.strerror or error}", stage="store"
        ) from None
    except BaseException:
        _discard(process, writer)
        raise
    finally:
        stderr_file.close()
        if process is not None and process.stdout is not None:
            process.stdout.close()
    return DumpResult(
        name=name,
        size_bytes=sink.size,
        raw_size_bytes=raw_size,
        sha256=sink.digest.hexdigest(),
        duration_seconds=time.monotonic() - started,
        archive=summary,
        writer=writer,
        dedup=deduplicator.stats if deduplicator is not None else None,
    )


def _discard(process: subprocess.Popen[bytes] | None, writer: StoredWriter) -> None:
    """Stop pg_dump if it still runs and delete the unfinished file."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    writer.abort()


def _widen_pipe(descriptor: int) -> None:
    """Ask for a 1 MiB pipe so pg_dump and bakup trade fewer, larger blocks (best effort)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(descriptor, F_SETPIPE_SZ, PIPE_SIZE)
