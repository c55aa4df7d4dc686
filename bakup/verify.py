"""Verification: is a stored backup really restorable?

Two levels:

- integrity: read the stored file back, check its sha256 against the manifest, decompress it
  fully, count every table's rows again from the archive and compare them with the manifest,
  and have ``pg_restore --list`` read its table of contents;
- restore: restore it into a scratch database (with a unique name, on VERIFY_DATABASE_URL's
  server or the source server), compare every table's row count with the manifest's, and drop
  the scratch database afterwards, whatever happens. Without the privilege to create a
  database this falls back to integrity and says so.

Scratch databases left by an interrupted run are dropped by the next one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import psycopg
import zstandard
from psycopg import sql

from bakup.archive import ArchiveFormatError, RowCounter
from bakup.catalog import Backup
from bakup.compression import get_compression
from bakup.dburl import ConnectionParams
from bakup.encryption import open_archive
from bakup.errors import BakupError, ChecksumMismatch, StorageError
from bakup.pgtools import die_with_parent, explain_failure, find_program
from bakup.restore import restore_backup
from bakup.storage.base import Storage

log = logging.getLogger("bakup")

READ_SIZE = 1 << 20
LIST_TIMEOUT_SECONDS = 300
SCRATCH_PREFIX = "bakup_verify_"
# A scratch database this old with nobody connected belongs to an interrupted run.
SCRATCH_ABANDONED_SECONDS = 600

_TABLE_COUNTS = """
    SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%'
"""


class VerifyError(BakupError):
    """The backup failed verification: the message says which check and how."""


@dataclass
class VerifyResult:
    """What verification checked and found."""

    level: str
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_manifest(self) -> dict[str, Any]:
        """Return the result as recorded in the manifest's ``verification`` field."""
        return {
            "level": self.level,
            "checks": self.checks,
            "notes": self.notes,
            "duration_seconds": round(self.seconds, 3),
        }


class _HashingReader(io.RawIOBase):
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


@dataclass
class _ReadBack:
    """What one pass over a stored backup found."""

    sha256: str
    stored_size: int
    counter: RowCounter
    list_returncode: int
    list_output: bytes
    list_errors: str
    unreadable: str | None = None  # why the content could not be decompressed or parsed


def _read_back(
    storage: Storage, backup: Backup, pg_restore: str, identities: list[Any] | None
) -> _ReadBack:
    """Stream the stored backup once: hash it, decompress it, count its rows and feed it to
    ``pg_restore --list``. Raises VerifyError if it does not decompress or pg_restore hangs,
    StorageError if it cannot be read, BakupError if it cannot be decrypted.

    pg_restore is killed and waited for on every way out, so a long-lived worker never
    accumulates stray or zombie children.
    """
    counter = RowCounter()
    with (
        tempfile.TemporaryFile() as listing,
        tempfile.TemporaryFile() as errors,
        storage.open_reader(backup.name) as stored,
    ):
        hashing = _HashingReader(stored)
        process = subprocess.Popen(
            (pg_restore, "--list"),
            stdin=subprocess.PIPE,
            stdout=listing,
            stderr=errors,
            preexec_fn=die_with_parent,
        )
        unreadable = None
        returncode = -1
        try:
            returncode = _feed_archive(backup, hashing, process, counter, identities)
        except ArchiveFormatError as error:
            unreadable = f"{backup.name} does not hold a pg_dump archive: {error}"
        except (EOFError, ValueError, zstandard.ZstdError, OSError) as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise StorageError(
                    f"reading {backup.name} failed: {error}", stage="verify"
                ) from None
            unreadable = f"{backup.name} does not decompress as {backup.compression}: {error}"
        finally:
            _stop(process)
        if unreadable is not None:
            # Hash the rest too: a checksum mismatch is the clearer diagnosis of corruption.
            while hashing.read(READ_SIZE):
                pass
        listing.seek(0)
        errors.seek(0)
        return _ReadBack(
            sha256=hashing.digest.hexdigest(),
            stored_size=hashing.size,
            counter=counter,
            list_returncode=returncode,
            list_output=listing.read(),
            list_errors=errors.read().decode("utf-8", "replace"),
            unreadable=unreadable,
        )


def _feed_archive(
    backup: Backup,
    hashing: _HashingReader,
    process: subprocess.Popen[bytes],
    counter: RowCounter,
    identities: list[Any] | None,
) -> int:
    """Decrypt and decompress the stored bytes into ``counter`` and pg_restore's stdin;
    returns pg_restore's exit status. Raises what reading, decrypting, decompressing or
    parsing raises; VerifyError when pg_restore does not finish."""
    assert process.stdin is not None
    stream = open_archive(
        io.BufferedReader(hashing),
        encrypted=backup.encrypted,
        compression=get_compression(backup.compression),
        identities=identities,
    )
    try:
        feeding = True
        while chunk := stream.read(READ_SIZE):
            counter.feed(chunk)
            if feeding:
                try:
                    process.stdin.write(chunk)
                except BrokenPipeError:
                    feeding = False  # pg_restore --list stops reading after the TOC
    finally:
        stream.close()
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    try:
        return process.wait(timeout=LIST_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise VerifyError(
            f"pg_restore --list did not finish reading {backup.name} within "
            f"{LIST_TIMEOUT_SECONDS} s",
            stage="verify",
            transient=True,
        ) from None


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Close the child's stdin, kill it if it still runs and reap it."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if process.poll() is None:
        with contextlib.suppress(OSError):
            process.kill()
        process.wait()


def check_integrity(
    storage: Storage,
    backup: Backup,
    pg_bin_dir: Path | None = None,
    identities: list[Any] | None = None,
) -> list[str]:
    """Read the stored backup whole and check it; returns the checks that passed.

    Raises ChecksumMismatch when the bytes differ from the manifest's sha256, VerifyError when
    the file does not decompress into an archive whose rows and table of contents match the
    manifest, StorageError when it cannot be read.
    """
    found = _read_back(storage, backup, find_program("pg_restore", pg_bin_dir), identities)
    if found.sha256 != backup.sha256 or found.stored_size != backup.size_bytes:
        raise ChecksumMismatch(
            f"checksum mismatch for {backup.name}: the stored file is corrupted "
            f"(sha256 {found.sha256[:16]}..., manifest says {backup.sha256[:16]}...)",
            stage="verify",
        )
    checks = ["sha256 matches the manifest"]
    if found.unreadable is not None:
        raise VerifyError(found.unreadable, stage="verify")
    try:
        summary = found.counter.finish()
    except ArchiveFormatError as error:
        raise VerifyError(
            f"{backup.name} holds an incomplete archive: {error}", stage="verify"
        ) from None
    if summary.row_counts != backup.table_row_counts:
        raise VerifyError(
            f"{backup.name}: the archive's rows differ from the manifest's "
            f"({_difference(backup.table_row_counts, summary.row_counts)})",
            stage="verify",
        )
    checks.append("decompressed fully; every table's rows match the manifest")
    if found.list_returncode != 0:
        _, message = explain_failure("pg_restore", found.list_errors, found.list_returncode, None)
        raise VerifyError(f"pg_restore --list cannot read {backup.name}: {message}", stage="verify")
    entries = found.list_output.count(b" TABLE DATA ")
    if entries != len(backup.table_row_counts):
        raise VerifyError(
            f"pg_restore --list shows data for {entries} tables, "
            f"the manifest for {len(backup.table_row_counts)}",
            stage="verify",
        )
    checks.append("pg_restore --list reads its table of contents")
    return checks


def restore_test(
    storage: Storage,
    backup: Backup,
    server: ConnectionParams,
    pg_bin_dir: Path | None = None,
    identities: list[Any] | None = None,
) -> list[str]:
    """Restore ``backup`` into a scratch database on ``server`` and compare row counts.

    ``server`` is a connection to any database on the server where the scratch database is
    created. Returns the checks that passed. Raises PermissionError when the role may not
    create databases (the caller falls back to integrity), VerifyError when the restore fails
    or counts differ, BakupError for connection failures.
    """
    with _connect(server) as admin:
        may_create = admin.execute(
            "SELECT rolcreatedb OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not may_create or not may_create[0]:
            raise PermissionError(
                f"role {server.user or '(default)'} may not create databases on {server.display()}"
            )
        drop_abandoned_scratch_databases(admin)
        scratch = f"{SCRATCH_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    try:
        target = server.with_dbname(scratch)
        try:
            restore_backup(
                storage, backup, target, no_owner=True, pg_bin_dir=pg_bin_dir, identities=identities
            )
        except BakupError as error:
            raise VerifyError(
                f"test restore of {backup.name} failed: {error.message}", stage="verify"
            ) from None
        restored = _count_rows(target)
        expected = backup.table_row_counts
        if {name: restored.get(name) for name in expected} != expected:
            raise VerifyError(
                f"test restore of {backup.name}: row counts differ from the manifest "
                f"({_difference(expected, restored)})",
                stage="verify",
            )
        return [f"restored into a scratch database; all {len(expected)} tables' row counts match"]
    finally:
        with _connect(server) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch))
            )


def drop_abandoned_scratch_databases(admin: psycopg.Connection[Any]) -> list[str]:
    """Drop scratch databases of interrupted verifications: older than a few minutes (their
    name carries their creation time) and with nobody connected. Returns their names."""
    rows = admin.execute(
        """SELECT d.datname FROM pg_catalog.pg_database d
           WHERE d.datname LIKE %s
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.datid = d.oid)""",
        (SCRATCH_PREFIX.replace("_", "\\_") + "%",),
    ).fetchall()
    dropped = []
    for (name,) in rows:
        try:
            created = int(name[len(SCRATCH_PREFIX) :].split("_")[0])
        except ValueError:
            continue
        if time.time() - created > SCRATCH_ABANDONED_SECONDS:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            log.info("Dropped scratch database left by an interrupted verification: %s", name)
            dropped.append(name)
    return dropped


def _connect(server: ConnectionParams) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(**server.connect_kwargs(), connect_timeout=15, autocommit=True)
    except psycopg.Error as error:
        _, message = explain_failure("psql", str(error), 1, server.password)
        raise BakupError(
            f"cannot connect to {server.display()} for the test restore: {message}", stage="verify"
        ) from None


def _count_rows(target: ConnectionParams) -> dict[str, int]:
    counts = {}
    with _connect(target) as connection:
        for schema, table in connection.execute(_TABLE_COUNTS).fetchall():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = connection.execute(query).fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def _difference(expected: dict[str, int], found: dict[str, int]) -> str:
    """Describe the first few tables whose counts differ."""
    differing = [
        f"{name}: {expected.get(name)} expected, {found.get(name)} found"
        for name in sorted(set(expected) | set(found))
        if expected.get(name) != found.get(name)
    ]
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    return "; ".join(differing[:3]) + more
