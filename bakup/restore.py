"""Restoring a backup: check its checksum, make sure the target is empty, then stream the
decompressed archive into pg_restore, which applies it in a single transaction.

The checksum is checked over the whole stored file before pg_restore starts, so a corrupted
backup is reported as such and the target is never touched. A single transaction means a
restore that fails half way leaves the target as it was. ``latest`` means the newest backup
that did not fail verification.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from bakup.catalog import Backup, manifest_name
from bakup.clients import restore_program
from bakup.compression import get_compression
from bakup.dburl import ConnectionParams
from bakup.encryption import open_archive
from bakup.errors import BackupNotFound, ChecksumMismatch, RestoreError
from bakup.pgtools import (
    child_connection,
    connect,
    diagnose_output,
    die_with_parent,
    explain_failure,
)
from bakup.storage.base import Storage

log = logging.getLogger("bakup")

READ_SIZE = 1 << 20

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
    digest = hashlib.sha256()
    size = 0
    with storage.open_reader(backup.name) as stream:
        while chunk := stream.read(READ_SIZE):
            digest.update(chunk)
            size += len(chunk)
    if digest.hexdigest() != backup.sha256 or size != backup.size_bytes:
        raise ChecksumMismatch(
            f"checksum mismatch for {backup.name}: the stored file is corrupted "
            f"(sha256 {digest.hexdigest()[:16]}..., manifest says {backup.sha256[:16]}...); "
            "restore an older backup",
            stage="verify",
        )
    return size


def count_user_relations(target: ConnectionParams) -> int:
    """Return how many tables, views, sequences and indexes the target database holds.

    Raises RestoreError with the connection failure explained.
    """
    try:
        with connect(target) as connection:
            row = connection.execute(_USER_OBJECTS).fetchone()
    except psycopg.Error as error:
        _stage, message = explain_failure(
            "pg_restore", str(error), 1, target.password, variable=target.variable
        )
        raise RestoreError(
            f"cannot connect to the target {target.display()}: {message}", stage="connect"
        ) from None
    return int(row[0]) if row else 0


def restore_backup(
    storage: Storage,
    backup: Backup,
    target: ConnectionParams,
    *,
    clean: bool = False,
    no_owner: bool = False,
    pg_bin_dir: Path | None = None,
    identities: list[Any] | None = None,
) -> None:
    """Restore ``backup`` into the database ``target`` (decrypted with ``identities`` if it is
    encrypted).

    Refuses a target that already holds tables unless ``clean`` (which drops the backup's
    objects first). Raises ChecksumMismatch for a corrupted file, RestoreError when the target
    is refused or pg_restore fails, StorageError when the file cannot be read.
    """
    pg_restore = restore_program(target, pg_bin_dir, backup.pg_dump_version)
    if backup.described:  # an adopted backup has no checksum to compare until verified
        check_checksum(storage, backup)
    existing = count_user_relations(target)
    if existing and not clean:
        raise RestoreError(
            f"the target {target.display()} is not empty ({existing} relations): restore into "
            "an empty database, or pass --clean to drop and replace the backup's objects",
            stage="restore",
        )
    compression = get_compression(backup.compression)
    with tempfile.TemporaryFile() as stderr_file, child_connection(target) as connection:
        command = (
            pg_restore,
            "--no-password",
            "--exit-on-error",
            "--single-transaction",
            f"--dbname={connection.conninfo}",
            *(("--clean", "--if-exists") if clean else ()),
            *(("--no-owner", "--no-privileges") if no_owner else ()),
        )
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
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
        assert process.stdin is not None
        try:
            with storage.open_reader(backup.name) as stored:
                stream = open_archive(
                    stored,
                    encrypted=backup.encrypted,
                    compression=compression,
                    identities=identities,
                )
                try:
                    while chunk := stream.read(READ_SIZE):
                        process.stdin.write(chunk)
                finally:
                    stream.close()
            process.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped early; its exit status and stderr say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        returncode = process.wait()
        if returncode != 0:
            failure = diagnose_output(
                "pg_restore", stderr_file, returncode, target.password, variable=target.variable
            )
            raise RestoreError(f"pg_restore failed: {failure.message}", stage="restore")
