"""Restoring a backup, whole or in part, in one stream or with parallel jobs.

Before anything touches the target: the target must be empty (or ``--clean`` given), the
backup's table of contents is read to choose what to restore (``--table``, ``--schema``) and
to find the roles that own it; roles the target server lacks are created from the backup's
globals with ``--roles``, or named in the error otherwise.

Two ways to apply it, both leaving the target as it was when they fail:

- ``--jobs 1``: the archive streams into one ``pg_restore --single-transaction``; the
  checksum is checked over the stored file first, so a corrupted backup never reaches the
  target, and a failure rolls everything back.
- ``--jobs N``: the archive is written to a local seekable copy (bakup/local_copy.py, with
  the data positions pg_dump could not write patched in), restored with ``pg_restore --jobs
  N`` into a staging copy of the target that is swapped in at the end (bakup/staging.py).
  A test restore's scratch database is restored into directly: it is dropped anyway.

``latest`` means the newest backup that did not fail verification.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import psycopg

from bakup import globals as cluster_globals
from bakup import partial
from bakup.archive import ArchiveSummary, RowCounter
from bakup.catalog import Backup, manifest_name
from bakup.clients import restore_program
from bakup.dburl import ConnectionParams
from bakup.dedup.reader import open_backup_archive
from bakup.errors import BackupNotFound, RestoreError
from bakup.local_copy import HashingReader, check_read, check_space, copy_directory, local_copy
from bakup.logs import megabytes
from bakup.pgtools import (
    child_connection,
    connect,
    diagnose_output,
    die_with_parent,
    explain_failure,
)
from bakup.progress import Progress
from bakup.staging import StagingRefused, preflight, staged
from bakup.storage.base import Storage

log = logging.getLogger("bakup")

READ_SIZE = 1 << 20
# pg_restore --jobs beyond this gains little and holds that many connections to the target.
MAX_DEFAULT_JOBS = 8
# Measured on 2 cores (bench/restore_speed, 2 GB, medians of 3): pg_restore -j 2 of pg_dump's own
# seekable file took 19.6 s, one stream 19.2 s: the server's backends already fill both cores,
# so parallel jobs gain nothing there and the local copy and the staging swap only add. Below 4
# cores the default streams.
MIN_PARALLEL_CORES = 4

_USER_OBJECTS = """
    SELECT count(*) FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
"""


def choose_backup(backups: list[Backup], name: str) -> Backup:
    """Pick the backup to restore from ``backups`` (a storage's listing).

    ``latest`` is the newest backup whose verification did not fail (never verified counts
    as not failed), and the choice is logged, with a warning for each newer one skipped. Any
    other name picks that backup, logging a warning if its verification failed. Raises
    BackupNotFound when there is no such backup, or every backup failed verification.
    """
    ordered = sorted(backups, key=lambda backup: (backup.created_at, backup.name))
    if name != "latest":
        for backup in ordered:
            if name in (backup.name, manifest_name(backup.name)):
                if backup.verified is False:
                    log.warning(
                        "WARNING: %s failed verification (%s): restoring it because it was named",
                        backup.name,
                        _verification_error(backup),
                    )
                return backup
        raise BackupNotFound(f"no backup named {name!r}: run `bakup list` to see them")
    if not ordered:
        raise BackupNotFound("there are no complete backups to restore")
    for index in range(len(ordered) - 1, -1, -1):
        chosen = ordered[index]
        if chosen.verified is not False:
            for skipped in ordered[index + 1 :]:
                log.warning(
                    "WARNING: skipping %s: its verification failed (%s)",
                    skipped.name,
                    _verification_error(skipped),
                )
            log.info("Restoring %s (newest backup that did not fail verification)", chosen.name)
            return chosen
    raise BackupNotFound(
        f"every backup failed verification, the newest being {ordered[-1].name} "
        f"({_verification_error(ordered[-1])}): name one to restore it anyway"
    )


def _verification_error(backup: Backup) -> str:
    """The recorded reason a backup failed verification, in one short line."""
    error = str((backup.verification or {}).get("error") or "no reason recorded")
    return error if len(error) <= 160 else error[:157] + "..."


def check_checksum(storage: Storage, backup: Backup) -> int:
    """Read the stored file whole and compare its sha256 with the manifest's.

    Returns the number of bytes read. Raises ChecksumMismatch when they differ (or the size
    does), StorageError when the file cannot be read.
    """
    with storage.open_reader(backup.name) as stream:
        hashing = HashingReader(stream)
        while hashing.read(READ_SIZE):
            pass
    check_read(backup, hashing)
    return hashing.size


def count_user_relations(target: ConnectionParams) -> int:
    """Return how many tables, views, sequences and indexes the target database holds.

    Raises RestoreError with the connection failure explained.
    """
    rows = _query_target(target, _USER_OBJECTS)
    return int(rows[0][0]) if rows else 0


def default_jobs() -> int:
    """The number of parallel pg_restore jobs when none is asked for: one per core, at most
    MAX_DEFAULT_JOBS, and one (the stream) below MIN_PARALLEL_CORES cores."""
    cores = os.cpu_count() or 1
    return 1 if cores < MIN_PARALLEL_CORES else min(cores, MAX_DEFAULT_JOBS)


@dataclass(frozen=True)
class RestoreOptions:
    """What to restore and how.

    ``jobs`` None means "as many as the cores, or one stream when a parallel restore is not
    possible here"; a number is a demand. ``staging`` False restores straight into the target
    (a scratch database that is dropped anyway).
    """

    clean: bool = False
    no_owner: bool = False
    roles: bool = False
    jobs: int | None = 1
    tables: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    staging: bool = True

    @property
    def partial(self) -> bool:
        """Whether only some tables or schemas are restored."""
        return bool(self.tables or self.schemas)


@dataclass(frozen=True)
class RestoreReport:
    """How a restore went: the jobs used, seconds taken, archive bytes read, and the local
    copy's size (0 when streamed) and data positions patched into it."""

    jobs: int
    seconds: float
    archive_bytes: int
    local_copy_bytes: int = 0
    patched_positions: int = 0
    roles_created: tuple[str, ...] = ()


def restore_backup(
    storage: Storage,
    backup: Backup,
    target: ConnectionParams,
    *,
    pg_bin_dir: Path | None = None,
    identities: list[Any] | None = None,
    options: RestoreOptions | None = None,
) -> RestoreReport:
    """Restore ``backup`` into the database ``target`` (decrypted with ``identities`` if it is
    encrypted), as ``options`` say (whole, one stream, by default).

    Refuses a target that already holds tables unless ``clean`` (which drops the backup's
    objects first), and a backup whose owners are missing on the target unless ``roles`` or
    ``no_owner``. Returns a RestoreReport. Raises ChecksumMismatch for a corrupted file,
    RestoreError when the target is refused or pg_restore fails, StorageError when the file
    cannot be read.
    """
    options = options or RestoreOptions()
    started = time.monotonic()
    pg_restore = restore_program(target, pg_bin_dir, backup.pg_dump_version)
    existing = count_user_relations(target)
    if existing and not options.clean and not options.partial:
        raise RestoreError(
            f"the target {target.display()} is not empty ({existing} relations): restore into "
            "an empty database, or pass --clean to drop and replace the backup's objects",
            stage="restore",
        )
    jobs = options.jobs
    if jobs is None:
        jobs = default_jobs()
        if jobs > 1:
            try:
                check_space(backup, copy_directory())
            except RestoreError as refusal:
                log.info("Restoring in one stream (--jobs 1): %s", refusal.message)
                jobs = 1
    if jobs > 1 and options.staging:
        try:
            preflight(target)  # before the copy: a refusal costs nothing
        except StagingRefused as refusal:
            if options.jobs is not None:
                raise
            log.info("Restoring in one stream (--jobs 1): %s", refusal.message)
            jobs = 1
    if jobs > 1:
        return _restore_parallel(
            storage,
            backup,
            target,
            pg_restore,
            jobs,
            options,
            identities,
            started,
            keep_replaced=bool(existing),
        )
    return _restore_streamed(storage, backup, target, pg_restore, options, identities, started)


def _restore_streamed(
    storage: Storage,
    backup: Backup,
    target: ConnectionParams,
    pg_restore: str,
    options: RestoreOptions,
    identities: list[Any] | None,
    started: float,
) -> RestoreReport:
    """Stream the archive into one pg_restore --single-transaction (see restore_backup)."""
    if backup.described:  # an adopted backup has no checksum to compare until verified
        check_checksum(storage, backup)
    with (
        _archive_stream(storage, backup, identities) as stream,
        Progress(f"Restoring {backup.name}", total=backup.raw_size_bytes or None) as progress,
    ):
        head, summary = read_head(stream)
        selection, created = _prepare_target(target, summary, options, backup, identities)
        with _use_list(selection, summary) as list_file:
            size = _run_pg_restore(
                pg_restore,
                target,
                options,
                extra=("--single-transaction",),
                list_file=list_file,
                feed=(head, stream),
                progress=progress,
            )
    return RestoreReport(1, time.monotonic() - started, size, roles_created=created)


def _restore_parallel(
    storage: Storage,
    backup: Backup,
    target: ConnectionParams,
    pg_restore: str,
    jobs: int,
    options: RestoreOptions,
    identities: list[Any] | None,
    started: float,
    *,
    keep_replaced: bool,
) -> RestoreReport:
    """Write a local copy (checked against the manifest as it is written), then restore it
    with pg_restore --jobs into a staging copy of the target swapped in at the end, or
    straight into the target when it is a scratch database (``options.staging`` false)."""
    copying = Progress(
        f"Copying {backup.name} for {jobs} jobs", total=backup.raw_size_bytes or None
    )

    def copied(amount: int, table: str | None) -> None:
        if table:
            copying.set_item(table)
        copying.advance(amount)

    copy_started = time.monotonic()
    with copying, local_copy(storage, backup, identities, progress=copied) as copy:
        copying.close()
        log.info(
            "Local copy written: %s in %.1f s (%d data positions patched)",
            megabytes(copy.size),
            time.monotonic() - copy_started,
            copy.patched,
        )
        # Roles are server-wide: the staging copy on the same server sees the same.
        selection, created = _prepare_target(target, copy.summary, options, backup, identities)
        items = len(selection.dump_ids) if selection else len(copy.summary.entries)
        place = (
            staged(target, keep_replaced=keep_replaced)
            if options.staging
            else contextlib.nullcontext(target)
        )
        with (
            place as into,
            _use_list(selection, copy.summary) as list_file,
            Progress(
                f"Restoring {backup.name} with {jobs} jobs", total=items, unit="items"
            ) as done,
        ):
            _run_pg_restore(
                pg_restore,
                into,
                options,
                extra=(f"--jobs={jobs}", "--verbose", str(copy.path)),
                list_file=list_file,
                progress=done,
            )
        return RestoreReport(
            jobs,
            time.monotonic() - started,
            copy.size,
            local_copy_bytes=copy.size,
            patched_positions=copy.patched,
            roles_created=created,
        )


@contextlib.contextmanager
def _archive_stream(
    storage: Storage, backup: Backup, identities: list[Any] | None
) -> Iterator[BinaryIO]:
    """Open the backup's archive, decrypted and decompressed, for reading."""
    with storage.open_reader(backup.name) as stored:
        stream = open_backup_archive(storage, backup, stored, identities)
        try:
            yield stream
        finally:
            stream.close()


def read_head(stream: BinaryIO) -> tuple[bytes, ArchiveSummary]:
    """Read ``stream`` until the archive's header and table of contents have passed; returns
    the bytes read (to be given to pg_restore first) and what they say. Raises RestoreError
    when the stream ends before its table of contents does."""
    counter = RowCounter()
    pieces: list[bytes] = []
    while not counter.toc_read:
        chunk = stream.read(READ_SIZE)
        if not chunk:
            raise RestoreError(
                "the backup ends inside its table of contents: it is not a whole archive",
                stage="restore",
            )
        pieces.append(chunk)
        counter.feed(chunk)
    return b"".join(pieces), counter.summary


def _prepare_target(
    target: ConnectionParams,
    summary: ArchiveSummary,
    options: RestoreOptions,
    backup: Backup,
    identities: list[Any] | None,
) -> tuple[partial.Selection | None, tuple[str, ...]]:
    """Before the target is touched: choose the entries to restore and make sure their owners
    exist (creating them with --roles). Returns the selection (None: everything) and the
    roles created. Raises RestoreError naming what is missing and how to proceed."""
    selection = None
    if options.partial:
        selection = partial.select(
            summary.entries,
            tables=options.tables,
            schemas=options.schemas,
            existing_schemas=_schemas(target),
        )
    if options.no_owner:
        return selection, ()
    needed = partial.owners(summary.entries, None if selection is None else selection.dump_ids)
    missing = cluster_globals.missing_roles(target, needed)
    if not missing:
        return selection, ()
    if not options.roles:
        raise RestoreError(
            f"the backup's objects belong to roles the target server lacks: "
            f"{', '.join(missing)}: restore with --roles to create them from the backup's "
            "globals, or with --no-owner to give everything to the restoring role; nothing "
            "was restored",
            stage="restore",
        )
    dump = cluster_globals.load_globals(backup, identities)
    if dump is None:
        raise RestoreError(
            f"the roles {', '.join(missing)} are missing on the target and this backup holds "
            "no globals to create them from: create them by hand, or restore with --no-owner",
            stage="restore",
        )
    created = cluster_globals.create_missing_roles(target, dump, missing)
    log.info("Created roles missing on the target: %s", ", ".join(created))
    return selection, tuple(created)


def _schemas(target: ConnectionParams) -> list[str]:
    """The schemas the target database has."""
    return [
        str(row[0]) for row in _query_target(target, "SELECT nspname FROM pg_catalog.pg_namespace")
    ]


def _query_target(target: ConnectionParams, query: str) -> list[tuple[Any, ...]]:
    """Run ``query`` on the target database and return its rows. Raises RestoreError with the
    connection failure explained."""
    try:
        with connect(target) as connection:
            return connection.execute(query).fetchall()
    except psycopg.Error as error:
        _stage, message = explain_failure(
            "pg_restore", str(error), 1, target.password, variable=target.variable
        )
        raise RestoreError(
            f"cannot connect to the target {target.display()}: {message}", stage="connect"
        ) from None


@contextlib.contextmanager
def _use_list(selection: partial.Selection | None, summary: ArchiveSummary) -> Iterator[str | None]:
    """A pg_restore --use-list file for ``selection`` (None when restoring everything)."""
    if selection is None:
        yield None
        return
    with tempfile.NamedTemporaryFile("w", prefix="bakup-list-", suffix=".txt") as handle:
        handle.write(selection.use_list(summary.entries))
        handle.flush()
        yield handle.name


def _run_pg_restore(
    pg_restore: str,
    target: ConnectionParams,
    options: RestoreOptions,
    *,
    extra: Sequence[str],
    list_file: str | None,
    feed: tuple[bytes, BinaryIO] | None = None,
    progress: Progress | None = None,
) -> int:
    """Run pg_restore into ``target`` with ``extra`` arguments, feeding it ``feed`` (the bytes
    already read, then the rest of the stream) on its standard input when given. Returns the
    bytes fed. Raises RestoreError with pg_restore's failure explained."""
    with tempfile.TemporaryFile() as stderr_file, child_connection(target) as connection:
        command = (
            pg_restore,
            "--no-password",
            "--exit-on-error",
            f"--dbname={connection.conninfo}",
            *(("--clean", "--if-exists") if options.clean else ()),
            *(("--no-owner", "--no-privileges") if options.no_owner else ()),
            *((f"--use-list={list_file}",) if list_file else ()),
            *extra,
        )
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                env=connection.env,
                pass_fds=connection.pass_fds,
                preexec_fn=die_with_parent,
            )
        except OSError as error:
            raise RestoreError(
                f"cannot run {pg_restore}: {error.strerror or error}: check PG_BIN_DIR or the "
                "PostgreSQL client install",
                stage="restore",
            ) from None
        size = 0
        try:
            if feed is not None:
                assert process.stdin is not None
                size = _feed(process.stdin, *feed, progress)
        except BaseException:
            process.kill()
            process.wait()
            raise
        returncode = (
            _wait_counting_items(process, stderr_file, progress)
            if feed is None and progress is not None
            else process.wait()
        )
        if returncode != 0:
            failure = diagnose_output(
                "pg_restore", stderr_file, returncode, target.password, variable=target.variable
            )
            raise RestoreError(f"pg_restore failed: {failure.message}", stage="restore")
    return size


def _wait_counting_items(
    process: subprocess.Popen[bytes], stderr_file: IO[bytes], progress: Progress
) -> int:
    """Wait for a pg_restore run with --verbose, advancing ``progress`` by each item it
    reports finished ("finished item N TABLE DATA name"); returns its exit status."""
    # A file description of its own: reading through pg_restore's would move the offset
    # pg_restore writes at.
    with open(f"/proc/self/fd/{stderr_file.fileno()}", "rb") as reader:
        return _count_items(process, reader, progress)


def _count_items(process: subprocess.Popen[bytes], reader: IO[bytes], progress: Progress) -> int:
    pending = b""
    while True:
        try:
            returncode = process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            returncode = None
        pending += reader.read()
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if b"finished item" in line:
                progress.set_item(line.rsplit(b" ", 1)[-1].decode("utf-8", "replace"))
                progress.advance(1)
        if returncode is not None:
            return returncode


def _feed(stdin: IO[bytes], head: bytes, stream: BinaryIO, progress: Progress | None) -> int:
    """Write ``head`` then the rest of ``stream`` to pg_restore; returns the bytes written.
    A pipe that pg_restore closed early is not an error here: its exit status says why."""
    size = 0
    try:
        stdin.write(head)
        size += len(head)
        while chunk := stream.read(READ_SIZE):
            stdin.write(chunk)
            size += len(chunk)
            if progress is not None:
                progress.advance(len(chunk))
        stdin.close()
    except BrokenPipeError:
        pass
    return size
