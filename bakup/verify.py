"""Verification: is a stored backup really restorable?

Two levels, and a third for encrypted backups whose key is not on this machine:

- integrity: read the stored file back, check its sha256 against the manifest, decompress it
  fully, count every table's rows again from the archive and compare them with the manifest,
  and have ``pg_restore --list`` read its table of contents;
- restore: restore it into a scratch database (with a unique name, on VERIFY_DATABASE_URL's
  server or the source server), compare every table's row count with the manifest's, and drop
  the scratch database afterwards, whatever happens. Without the privilege to create a
  database this falls back to integrity and says so;
- checksum: without the decryption key, the stored bytes' sha256 against the manifest and the
  age file's structure: all that can be checked without decrypting.

Scratch databases left by an interrupted run are dropped by the next one: each run holds an
advisory lock on the verify server for as long as its scratch database exists, and only
databases whose lock is free (their owner is gone) are dropped, however old.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import zstandard
from psycopg import sql

from bakup.archive import ArchiveFormatError, ArchiveSummary, RowCounter
from bakup.catalog import DEDUP, Backup
from bakup.clients import list_program
from bakup.dburl import ConnectionParams
from bakup.dedup.chunks import ChunkError
from bakup.dedup.reader import missing_chunks, open_backup_archive
from bakup.errors import BakupError, ChecksumMismatch, StorageError
from bakup.local_copy import HashingReader
from bakup.pgtools import connect, diagnose, die_with_parent, explain_failure
from bakup.progress import Progress
from bakup.restore import RestoreOptions, restore_backup
from bakup.scratch import (
    SCRATCH_PREFIX,
    drop_abandoned_scratch_databases,
    drop_database,
    scratch_lock_key,
)
from bakup.storage.base import Storage

log = logging.getLogger("bakup")

READ_SIZE = 1 << 20
LIST_TIMEOUT_SECONDS = 300
# Verification without the decryption key: the level recorded and the note that says why.
KEYLESS_LEVEL = "checksum"
KEYLESS_NOTE = (
    "the decryption key is not on this machine (ENCRYPTION_IDENTITY_FILE): "
    "checked the stored bytes only"
)
AGE_VERSION_LINE = b"age-encryption.org/v1"
AGE_HEADER_LIMIT = 64 * 1024  # far more than a header with a few recipients takes
AGE_NONCE_SIZE = 16
AGE_TAG_SIZE = 16
AGE_CHUNK_SIZE = 64 * 1024 + AGE_TAG_SIZE

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
    # How long the test restore took, scratch database created to dropped: the measured
    # time to restore. None when no test restore ran to its end.
    restore_seconds: float | None = None

    def as_manifest(self) -> dict[str, Any]:
        """Return the result as recorded in the manifest's ``verification`` field."""
        record: dict[str, Any] = {
            "level": self.level,
            "checks": self.checks,
            "notes": self.notes,
            "duration_seconds": round(self.seconds, 3),
        }
        if self.restore_seconds is not None:
            record["restore_duration_seconds"] = round(self.restore_seconds, 3)
        return record


@dataclass
class _ReadBack:
    """What one pass over a stored backup found."""

    sha256: str
    stored_size: int
    archive_size: int  # the decrypted, decompressed pg_dump archive's
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
        hashing = HashingReader(stored)
        process = subprocess.Popen(
            (pg_restore, "--list"),
            stdin=subprocess.PIPE,
            stdout=listing,
            stderr=errors,
            preexec_fn=die_with_parent,
        )
        unreadable = None
        returncode = -1
        archive_size = 0
        try:
            returncode, archive_size = _feed_archive(
                storage, backup, hashing, process, counter, identities
            )
        except ArchiveFormatError as error:
            unreadable = f"{backup.name} does not hold a pg_dump archive: {error}"
        except ChunkError as error:  # a deduplicated backup's chunk, damaged or gone
            unreadable = f"{backup.name}: {error.message}"
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
            archive_size=archive_size,
            counter=counter,
            list_returncode=returncode,
            list_output=listing.read(),
            list_errors=errors.read().decode("utf-8", "replace"),
            unreadable=unreadable,
        )


def _feed_archive(
    storage: Storage,
    backup: Backup,
    hashing: HashingReader,
    process: subprocess.Popen[bytes],
    counter: RowCounter,
    identities: list[Any] | None,
) -> tuple[int, int]:
    """Decrypt and decompress the stored bytes into ``counter`` and pg_restore's stdin;
    returns pg_restore's exit status and the archive's size. Raises what reading,
    decrypting, decompressing or parsing raises; VerifyError when pg_restore does not
    finish."""
    assert process.stdin is not None
    stream = open_backup_archive(
        storage, backup, io.BufferedReader(hashing), identities, every_destination=True
    )
    size = 0
    progress = Progress(f"Reading back {backup.name}", total=backup.raw_size_bytes or None)
    try:
        feeding = True
        while chunk := stream.read(READ_SIZE):
            size += len(chunk)
            counter.feed(chunk)
            if table := counter.current_table:
                progress.set_item(table)
            progress.advance(len(chunk))
            if feeding:
                try:
                    process.stdin.write(chunk)
                except BrokenPipeError:
                    feeding = False  # pg_restore --list stops reading after the TOC
    finally:
        progress.close()
        stream.close()
    with contextlib.suppress(BrokenPipeError):
        process.stdin.close()
    try:
        return process.wait(timeout=LIST_TIMEOUT_SECONDS), size
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
    manifest or pg_restore cannot be run, StorageError when it cannot be read.
    """
    chunk_checks = []
    if backup.backup_format == DEDUP:
        try:
            total, missing = missing_chunks(storage, backup)
        except ChunkError as error:
            raise VerifyError(f"{backup.name}: {error.message}", stage="verify") from None
        if missing:
            place, absent = missing[0]
            raise VerifyError(
                f"{len(absent)} of the {total} chunks of {backup.name} are missing from "
                f"{place} (the first: {absent[0][:16]}...): restore from another destination "
                "or an older backup",
                stage="verify",
            )
        chunk_checks.append(
            f"all {total} chunks present in every destination, each read and matching its name"
        )
    found = _read_whole(storage, backup, pg_bin_dir, identities)
    if found.sha256 != backup.sha256 or found.stored_size != backup.size_bytes:
        raise ChecksumMismatch(
            f"checksum mismatch for {backup.name}: the stored file is corrupted "
            f"(sha256 {found.sha256[:16]}..., manifest says {backup.sha256[:16]}...)",
            stage="verify",
        )
    checks = ["sha256 matches the manifest"]
    summary = _archive_summary(found, backup)
    if summary.row_counts != backup.table_row_counts:
        raise VerifyError(
            f"{backup.name}: the archive's rows differ from the manifest's "
            f"({_difference(backup.table_row_counts, summary.row_counts)})",
            stage="verify",
        )
    checks.append("decompressed fully; every table's rows match the manifest")
    _check_listing(found, backup, len(backup.table_row_counts), "the manifest")
    checks.append("pg_restore --list reads its table of contents")
    return checks + chunk_checks


def _read_whole(
    storage: Storage, backup: Backup, pg_bin_dir: Path | None, identities: list[Any] | None
) -> _ReadBack:
    """_read_back with pg_restore found; an OSError starting it (or making its temporary
    files: reads are wrapped) becomes a VerifyError."""
    try:
        return _read_back(storage, backup, list_program(pg_bin_dir), identities)
    except OSError as error:
        raise VerifyError(
            f"verifying {backup.name} failed: {_describe_os_error(error)}", stage="verify"
        ) from None


def _archive_summary(found: _ReadBack, backup: Backup) -> ArchiveSummary:
    """What the read-back archive holds. Raises VerifyError when it could not be read or is
    incomplete."""
    if found.unreadable is not None:
        raise VerifyError(found.unreadable, stage="verify")
    try:
        return found.counter.finish()
    except ArchiveFormatError as error:
        raise VerifyError(
            f"{backup.name} holds an incomplete archive: {error}", stage="verify"
        ) from None


def _check_listing(found: _ReadBack, backup: Backup, tables: int, source: str) -> None:
    """Check that pg_restore --list read the table of contents and lists data for ``tables``
    tables (as ``source`` says). Raises VerifyError."""
    if found.list_returncode != 0:
        _, message = explain_failure("pg_restore", found.list_errors, found.list_returncode, None)
        raise VerifyError(f"pg_restore --list cannot read {backup.name}: {message}", stage="verify")
    entries = found.list_output.count(b" TABLE DATA ")
    if entries != tables:
        raise VerifyError(
            f"pg_restore --list shows data for {entries} tables, {source} for {tables}",
            stage="verify",
        )


def check_stored_checksum(storage: Storage, backup: Backup) -> list[str]:
    """Check a stored backup without decrypting it: for when the decryption key is kept off
    this machine (ENCRYPTION_IDENTITY_FILE unset), as the README advises.

    Reads the stored file whole, checks its sha256 and size against the manifest and, for an
    encrypted backup, that it is a well-formed age file: the header's lines and recipient
    stanzas, and a payload whose size fits age's 64 KiB chunks. Returns the checks that
    passed. Raises ChecksumMismatch when the bytes differ from the manifest, VerifyError
    when the file is not a well-formed age file, StorageError when it cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    head = bytearray()
    with storage.open_reader(backup.name) as stream:
        while chunk := stream.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
            if len(head) < AGE_HEADER_LIMIT:
                head += chunk[: AGE_HEADER_LIMIT - len(head)]
    if digest.hexdigest() != backup.sha256 or size != backup.size_bytes:
        raise ChecksumMismatch(
            f"checksum mismatch for {backup.name}: the stored file is corrupted "
            f"(sha256 {digest.hexdigest()[:16]}..., manifest says {backup.sha256[:16]}...)",
            stage="verify",
        )
    checks = ["sha256 matches the manifest"]
    if backup.encrypted:
        try:
            header_size, recipients = _parse_age_header(bytes(head))
            _check_age_payload(size - header_size)
        except ValueError as error:
            raise VerifyError(
                f"{backup.name} is not a well-formed age file: {error}", stage="verify"
            ) from None
        checks.append(
            f"the age header is well-formed ({recipients} recipients) and the encrypted "
            "payload's size fits its chunks"
        )
    return checks


def check_without_key(storage: Storage, backup: Backup) -> VerifyResult:
    """Verify an encrypted backup as far as possible without its decryption key: the result
    has level ``checksum``, the checks of check_stored_checksum and KEYLESS_NOTE. Raises
    as check_stored_checksum does."""
    started = time.monotonic()
    checks = check_stored_checksum(storage, backup)
    return VerifyResult(
        level=KEYLESS_LEVEL,
        checks=checks,
        notes=[KEYLESS_NOTE],
        seconds=time.monotonic() - started,
    )


def _parse_age_header(data: bytes) -> tuple[int, int]:
    """Check the header of a binary age file (age-encryption.org/v1) at the start of
    ``data``; returns its size in bytes and its number of X25519 recipient stanzas. Raises
    ValueError saying what is wrong. The MAC cannot be checked without the key."""
    lines = data.split(b"\n")
    if len(lines) < 2 or lines[0] != AGE_VERSION_LINE:
        raise ValueError("it does not start with the age-encryption.org/v1 line")
    position = len(lines[0]) + 1
    index = 1
    x25519 = 0
    while True:
        if index >= len(lines) - 1:  # the last piece has no newline after it: cut off
            raise ValueError("the header has no end (--- line) in its first 64 KiB")
        line = lines[index]
        if line.startswith(b"--- "):
            if not _is_base64(line[4:], 32):
                raise ValueError("the header's MAC line is malformed")
            break
        if not line.startswith(b"-> "):
            raise ValueError(f"header line {index + 1} is neither a recipient nor the end")
        arguments = line[3:].split(b" ")
        if not all(arguments) or not all(_is_vchar(argument) for argument in arguments):
            raise ValueError(f"recipient stanza on header line {index + 1} is malformed")
        body = []
        while True:  # the body: base64 lines of 64 characters, ended by a shorter one
            index += 1
            if index >= len(lines) - 1:
                raise ValueError("the header has no end (--- line) in its first 64 KiB")
            body.append(lines[index])
            if len(lines[index]) < 64:
                break
            if len(lines[index]) > 64:
                raise ValueError(f"header line {index + 1} is longer than 64 characters")
        if arguments[0] == b"X25519":
            if len(arguments) != 2 or not _is_base64(arguments[1], 32):
                raise ValueError("an X25519 recipient stanza has a malformed share")
            if not _is_base64(b"".join(body), 32):
                raise ValueError("an X25519 recipient stanza has a malformed file key")
            x25519 += 1
        index += 1
    if not x25519:
        raise ValueError("the header names no X25519 recipient (age1... key)")
    size = position + sum(len(line) + 1 for line in lines[1 : index + 1])
    return size, x25519


def _check_age_payload(size: int) -> None:
    """Check that an age payload of ``size`` bytes can be a nonce and whole chunks: each
    chunk is up to 64 KiB of ciphertext plus a 16-byte tag. Raises ValueError."""
    chunks = size - AGE_NONCE_SIZE
    if chunks < AGE_TAG_SIZE or 0 < chunks % AGE_CHUNK_SIZE < AGE_TAG_SIZE:
        raise ValueError(f"its encrypted payload of {size} bytes cannot hold whole chunks")


def _is_base64(text: bytes, decoded_size: int) -> bool:
    """Whether ``text`` is unpadded standard base64 of exactly ``decoded_size`` bytes."""
    if len(text) != (decoded_size * 8 + 5) // 6:
        return False
    try:
        decoded = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        return False
    # The canonical encoding only: leftover bits must be zero (re-encoding gives it back).
    return len(decoded) == decoded_size and base64.b64encode(decoded).rstrip(b"=") == text


def _is_vchar(text: bytes) -> bool:
    return all(0x21 <= byte <= 0x7E for byte in text)


def restore_test(
    storage: Storage,
    backup: Backup,
    server: ConnectionParams,
    pg_bin_dir: Path | None = None,
    identities: list[Any] | None = None,
    *,
    server_variable: str | None = None,
) -> list[str]:
    """Restore ``backup`` into a scratch database on ``server`` and compare row counts.

    ``server`` is a connection to any database on the server where the scratch database is
    created; ``server_variable`` names the variable it came from (VERIFY_DATABASE_URL, or the
    target's DATABASE_URL), for messages; by default the one ``server`` records, else
    DATABASE_URL. Returns the checks that passed. Raises
    PermissionError when the role may not create databases (the caller falls back to
    integrity), VerifyError when the restore fails, counts differ or the server fails
    (transient when a retry may help, such as a refused connection).

    The scratch database's owner holds an advisory lock keyed by its name for as long as the
    database exists, on a session kept open meanwhile: cleanup by other runs drops only
    scratch databases whose lock is free, whose owner is gone.
    """
    if server_variable is None:
        server_variable = getattr(server, "variable", None) or "DATABASE_URL"
    admin = _connect(server, server_variable)
    with admin:
        with _server_errors(server, server_variable, "checking the role's privileges"):
            may_create = admin.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_catalog.pg_roles "
                "WHERE rolname = current_user"
            ).fetchone()
        if not may_create or not may_create[0]:
            raise PermissionError(
                f"role {server.user or '(default)'} may not create databases on {server.display()}"
            )
        scratch = f"{SCRATCH_PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
        with _server_errors(server, server_variable, "creating the scratch database"):
            if admin.info.server_version >= 140000:
                # This session holds the claim while the restore runs, idle: a server-wide
                # idle_session_timeout must not end it (and the claim with it).
                admin.execute("SET idle_session_timeout = 0")
            # Claimed before it exists: no other run ever sees it unclaimed while it lives.
            admin.execute("SELECT pg_advisory_lock(%s, %s)", scratch_lock_key(scratch))
            drop_abandoned_scratch_databases(admin)
            # template0: objects added to template1 would collide with the backup's own.
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch))
            )
        try:
            with _server_errors(server, server_variable, "creating the scratch database"):
                admin.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(scratch), sql.Literal(_owner_note(backup))
                    )
                )
            checks = _restore_and_count(
                storage,
                backup,
                server.with_dbname(scratch),
                server_variable,
                pg_bin_dir,
                identities,
            )
        except BaseException:
            # The first failure is the one to report; a failed drop is left to the next
            # run's cleanup (the lock goes with this session).
            with contextlib.suppress(psycopg.Error, OSError):
                drop_database(admin, scratch)
            raise
        with _server_errors(server, server_variable, "dropping the scratch database"):
            drop_database(admin, scratch)
        return checks


def _restore_and_count(
    storage: Storage,
    backup: Backup,
    target: ConnectionParams,
    server_variable: str,
    pg_bin_dir: Path | None,
    identities: list[Any] | None,
) -> list[str]:
    """Restore into the scratch database ``target`` and compare its row counts with the
    manifest's; returns the check that passed, raises VerifyError."""
    try:
        # As many jobs as a restore would use: the figure measured is the real time to restore.
        # The scratch database is dropped anyway, so it is restored into directly.
        restore_backup(
            storage,
            backup,
            target,
            pg_bin_dir=pg_bin_dir,
            identities=identities,
            options=RestoreOptions(no_owner=True, jobs=None, staging=False),
        )
    except OSError as error:
        raise VerifyError(
            f"test restore of {backup.name} failed: {_describe_os_error(error)}", stage="verify"
        ) from None
    except BakupError as error:
        raise VerifyError(
            f"test restore of {backup.name} failed: {error.message}",
            stage="verify",
            transient=error.transient,
        ) from None
    with _server_errors(target, server_variable, "counting the restored rows"):
        restored = _count_rows(target)
    expected = backup.table_row_counts
    if {name: restored.get(name) for name in expected} != expected:
        raise VerifyError(
            f"test restore of {backup.name}: row counts differ from the manifest "
            f"({_difference(expected, restored)})",
            stage="verify",
        )
    return [f"restored into a scratch database; all {len(expected)} tables' row counts match"]


def _owner_note(backup: Backup) -> str:
    """The comment a scratch database carries, for an operator wondering whose it is."""
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"bakup test restore of {backup.name} by {socket.gethostname()} pid {os.getpid()}, "
        f"started {started}; dropped when it ends"
    )


def _connect(server: ConnectionParams, variable: str) -> psycopg.Connection[Any]:
    """Connect to ``server`` (from ``variable``); raises VerifyError saying what failed."""
    with _server_errors(server, variable, "connecting"):
        return connect(server, autocommit=True)


@contextlib.contextmanager
def _server_errors(server: ConnectionParams, variable: str, doing: str) -> Iterator[None]:
    """Turn a psycopg error or OSError from the verify server into one VerifyError line that
    names the server and its variable, without the password; transient when a retry may
    help (the server refused or dropped the connection)."""
    try:
        yield
    except (psycopg.Error, OSError) as error:
        text = str(error) if isinstance(error, psycopg.Error) else error.strerror or str(error)
        failure = diagnose(
            "psql", text or type(error).__name__, 1, server.password, variable=variable
        )
        message = failure.message
        transient = failure.transient or isinstance(error, psycopg.OperationalError | OSError)
        raise VerifyError(
            f"test restore on {server.display()} ({variable}): {doing} failed: {message}",
            stage="verify",
            transient=transient,
        ) from None


def _count_rows(target: ConnectionParams) -> dict[str, int]:
    """Count every table's rows in ``target``; raises psycopg.Error."""
    counts = {}
    with connect(target) as connection:
        for schema, table in connection.execute(_TABLE_COUNTS).fetchall():
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = connection.execute(query).fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


def _describe_os_error(error: OSError) -> str:
    """One line for a local failure: what the system said and about which file."""
    text = error.strerror or str(error) or type(error).__name__
    return f"{text}: {error.filename}" if error.filename else text


def _difference(expected: dict[str, int], found: dict[str, int]) -> str:
    """Describe the first few tables whose counts differ."""
    differing = [
        f"{name}: {expected.get(name)} expected, {found.get(name)} found"
        for name in sorted(set(expected) | set(found))
        if expected.get(name) != found.get(name)
    ]
    more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
    return "; ".join(differing[:3]) + more


def describe_stored(
    storage: Storage,
    backup: Backup,
    pg_bin_dir: Path | None = None,
    identities: list[Any] | None = None,
) -> tuple[Backup, list[str]]:
    """Read an adopted (or unrecorded) backup whole and describe it, as a backup's own run
    would have: its sha256 and size, every table's rows (zlib-compressed data blocks of the
    original script's ``pg_dump -Fc`` archives included) and the versions in its header.

    Returns the described backup and the checks that passed. Raises VerifyError when the
    file does not decompress into a complete archive that ``pg_restore --list`` reads,
    StorageError when it cannot be read.
    """
    found = _read_whole(storage, backup, pg_bin_dir, identities)
    summary = _archive_summary(found, backup)
    _check_listing(found, backup, len(summary.row_counts), "its data blocks")
    described = replace(
        backup,
        sha256=found.sha256,
        size_bytes=found.stored_size,
        raw_size_bytes=found.archive_size,
        table_row_counts=summary.row_counts,
        contents=summary.contents(),
        pg_dump_version=summary.pg_dump_version,
        server_version=summary.server_version,
        archive_version=summary.archive_version,
        database=summary.database or backup.database,
    )
    return described, [
        f"sha256 recorded ({found.sha256[:16]}...)",
        f"decompressed fully; rows counted in {len(summary.row_counts)} tables"
        + (" (pg_dump's own zlib data blocks)" if summary.data_compression == "gzip" else ""),
        "pg_restore --list reads its table of contents",
    ]
