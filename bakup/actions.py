"""The actions bakup performs, shared by the CLI and the worker: back up, verify, prune,
restore. Each works on one target (one database and its folder).

Each action logs in the original script's words, emits events for metrics and notifications,
and raises a BakupError with a one-line message when it fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bakup import __version__, events, failpoints, lifecycle, runlock
from bakup.catalog import (
    DEDUP,
    Backup,
    find_backup,
    list_backups,
    newest_recorded,
    read_contents,
)
from bakup.compression import get_compression
from bakup.dburl import ConnectionParams
from bakup.dedup.chunks import COMPRESSION_LEVEL, ChunkStore, open_chunk_stores
from bakup.dedup.collect import Collection, collect, wait_for_collections
from bakup.dedup.collect import describe as describe_collections
from bakup.dedup.usage import measure_usage
from bakup.dump import dump_to_storage
from bakup.errors import BakupError
from bakup.globals import capture_globals
from bakup.journal import record_run
from bakup.lease import Lease
from bakup.logs import RULE, megabytes
from bakup.progress import Progress
from bakup.redaction import redact
from bakup.restore import RestoreOptions, check_checksum, choose_backup, restore_backup
from bakup.retention import PrunePlan, plan_prune
from bakup.settings import Settings
from bakup.storage import Storage, open_storage
from bakup.targets import Target
from bakup.verify import (
    VerifyError,
    VerifyResult,
    check_integrity,
    check_without_key,
    describe_stored,
    restore_test,
)

log = logging.getLogger("bakup")


@dataclass(frozen=True)
class BackupOutcome:
    """A finished backup and, when pruning after it failed, why."""

    backup: Backup
    prune_error: BakupError | None = None


def _never(error: BakupError) -> bool:
    return False


def run_backup(
    settings: Settings,
    target: Target,
    *,
    prune: bool = True,
    retry_if: Callable[[BakupError], bool] = _never,
) -> BackupOutcome:
    """Take one backup of ``target``'s database, then (unless ``prune`` is false) prune.

    ``retry_if`` says whether the caller will retry after a given failure: such a failed
    attempt is a warning and a ``backup.attempt_failed`` event; a failure nobody retries is
    the outcome (the original script's ERROR line and ``backup.failed``, which alerts).
    Returns the new backup. Raises BakupError (with the failed stage, and whether it is
    transient) when the backup fails; in that case nothing is pruned. A failure of the
    pruning that follows a good backup is returned in the outcome, not raised: the backup
    itself stands.
    """
    label = target.name
    events.emit(events.Event(events.BACKUP_STARTED, label))
    try:
        database = target.require_database()
    except BakupError as error:
        _backup_failed(label, error, retry_if)
        raise
    storage = open_storage(target.location)
    log.info(RULE)
    log.info("Starting PostgreSQL database backup")
    log.info("Database: %s on %s:%s", database.dbname, database.host, database.port)
    log.info("User: %s", database.user or "(default)")
    log.info("Backup directory: %s", storage.describe())
    try:
        with runlock.exclusive(target.location, label):
            backup = _take_backup(settings, target, database, storage)
            _backup_succeeded(label, storage, backup)
            prune_error = _prune_after_backup(settings, target) if prune else None
    except BakupError as error:
        _backup_failed(label, error, retry_if, storage)
        raise
    except Exception as error:
        # A bug (or a time limit), not an expected failure: still alert and count it, then
        # let the traceback out.
        message = redact(f"unexpected {type(error).__name__}: {error}", [database.password])
        _backup_failed(label, BakupError(message, stage="internal"), _never, storage)
        raise
    log.info("Backup completed successfully")
    log.info(RULE)
    return BackupOutcome(backup, prune_error)


def _backup_succeeded(label: str, storage: Storage, backup: Backup) -> None:
    """Record a good backup in the journal and announce it, before the prune that follows.
    Never raises."""
    record_run(
        storage,
        {
            "kind": "backup",
            "outcome": "success",
            "name": backup.name,
            "size_bytes": backup.size_bytes,
            "raw_size_bytes": backup.raw_size_bytes,
            "duration_seconds": backup.duration_seconds,
        },
    )
    events.emit(
        events.Event(
            events.BACKUP_SUCCEEDED,
            label,
            details={
                "name": backup.name,
                "size_bytes": backup.size_bytes,
                "raw_size_bytes": backup.raw_size_bytes,
                "duration_seconds": backup.duration_seconds,
                "created_at": backup.created_at,
            },
        )
    )


def _prune_after_backup(settings: Settings, target: Target) -> BakupError | None:
    """Prune after a good backup (the run lock already held); returns the failure, if any.
    Even a bug in pruning is returned, not raised: it must not turn the backup into a failed
    one."""
    try:
        _prune_locked(settings, target, dry_run=False, now=None)
    except BakupError as error:
        log.error("ERROR: Failed to prune old backups: %s", error.message)
        return error
    except Exception as error:
        failure = BakupError(f"unexpected {type(error).__name__}: {error}", stage="prune")
        log.exception("ERROR: Failed to prune old backups: %s", failure.message)
        return failure
    return None


def _backup_failed(
    label: str,
    error: BakupError,
    retry_if: Callable[[BakupError], bool],
    storage: Storage | None = None,
) -> None:
    """Record a failed attempt: the outcome when nobody retries it, else a warning."""
    retried = retry_if(error)
    if retried:
        log.warning("WARNING: Backup attempt failed, it will be retried: %s", error.message)
        kind, outcome = events.BACKUP_ATTEMPT_FAILED, "attempt failed"
    else:
        log.error("ERROR: Failed to create backup: %s", error.message)
        kind, outcome = events.BACKUP_FAILED, "failure"
    log.info(RULE)
    if storage is not None:
        record_run(
            storage,
            {"kind": "backup", "outcome": outcome, "stage": error.stage, "error": error.message},
        )
    events.emit(events.Event(kind, label, stage=error.stage, error=error.message))


def _take_backup(
    settings: Settings, target: Target, database: ConnectionParams, storage: Storage
) -> Backup:
    """Claim a name, dump and publish the data, then record the backup complete."""
    storage.prepare()
    recipients = settings.recipients()
    dedup = target.backup_format == DEDUP
    chunk_stores = (
        open_chunk_stores(
            storage,
            encrypted=bool(recipients),
            recipients=recipients,
            identities=settings.identities() if recipients else None,
            create=True,
        )
        if dedup
        else None
    )
    claim = lifecycle.claim(
        storage,
        database.dbname,
        target.compression,
        encrypted=bool(recipients),
        backup_format=target.backup_format,
    )
    name = claim.name
    failpoints.reach("claimed")
    try:
        with lifecycle.held(storage, claim) as lease:
            if dedup:
                # After the claim, before the chunks are listed: see bakup.dedup.collect. The
                # lease is renewed while it waits, so no one takes the claim for a dead one.
                wait_for_collections(storage)
            log.info("Creating backup: %s", f"{storage.describe().rstrip('/')}/{name}")
            log.info("Compressing backup...")
            backup = _dump_and_record(
                settings, target, database, storage, claim, lease, chunk_stores
            )
    except BaseException:
        lifecycle.withdraw(storage, claim)
        raise
    failpoints.reach("completed")
    log.info("Backup created successfully")
    log.info("Backup size: %s", megabytes(backup.raw_size_bytes))
    log.info("Backup compressed successfully: %s", megabytes(backup.size_bytes))
    return backup


def _dump_and_record(
    settings: Settings,
    target: Target,
    database: ConnectionParams,
    storage: Storage,
    claim: lifecycle.Claim,
    lease: Lease,
    chunk_stores: list[ChunkStore] | None,
) -> Backup:
    """Dump ``database`` under ``claim`` and record the backup complete, only while ``lease``
    is still held. Returns the backup; raises what the dump, the storage or a lost lease
    raises (the data this run published is withdrawn first)."""
    name = claim.name
    recipients = settings.recipients()
    dedup = target.backup_format == DEDUP
    with Progress(f"Backing up {target.name}", total=_previous_size(storage)) as progress:
        result = dump_to_storage(
            database,
            storage,
            name,
            compression=target.compression,
            level=target.compression_level,
            pg_bin_dir=settings.pg_bin_dir,
            recipients=recipients,
            progress=progress,
            chunk_stores=chunk_stores,
        )
        progress.close()  # the live line is gone before the next log line
        failpoints.reach("published")
        try:
            # After the dump: a failed dump needs no globals, and their failure never
            # fails the backup (capture_globals warns and records none).
            server_globals = capture_globals(
                database,
                pg_bin_dir=settings.pg_bin_dir,
                recipients=recipients,
                label=target.name,
                name=name,
            )
            backup = Backup(
                name=name,
                database=database.dbname,
                created_at=claim.created_at,
                finished_at=datetime.now(UTC),
                size_bytes=result.size_bytes,
                raw_size_bytes=result.raw_size_bytes,
                sha256=result.sha256,
                compression="zstd" if dedup else target.compression,
                compression_level=(
                    COMPRESSION_LEVEL
                    if dedup
                    else target.compression_level
                    if target.compression_level is not None
                    else get_compression(target.compression).default_level
                ),
                backup_format=target.backup_format,
                dedup=result.dedup.as_manifest() if result.dedup is not None else None,
                duration_seconds=round(result.duration_seconds, 3),
                pg_dump_version=result.archive.pg_dump_version,
                server_version=result.archive.server_version,
                archive_version=result.archive.archive_version,
                source=database.display(),
                table_row_counts=result.archive.row_counts,
                contents=result.archive.contents(),
                bakup_version=__version__,
                encrypted=bool(recipients),
                globals=server_globals,
            )
            lease.conclude()  # no renewal after this; nobody took the run for a dead one
            lifecycle.complete(storage, backup)
        except BaseException:
            result.writer.abort()  # published but never recorded: still this run's own
            raise
        result.writer.close()
    return backup


def _previous_size(storage: Storage) -> int | None:
    """The archive size of the newest backup in ``storage``: the progress line's expected
    total (its ETA). None when there is none or the storage cannot tell. Never raises: an
    estimate must not fail a backup."""
    try:
        previous = newest_recorded(storage)
    except Exception:
        return None
    return previous.raw_size_bytes if previous is not None and previous.raw_size_bytes else None


def run_prune(
    settings: Settings, target: Target, *, dry_run: bool = False, now: datetime | None = None
) -> PrunePlan[Backup]:
    """Apply the retention policy to ``target``'s backups, holding its run lock.

    Before retention, each destination is swept (``bakup.lifecycle.sweep``): dead claims
    cleaned, interrupted deletions finished, backups found without a manifest adopted. Returns
    the plan that was carried out (or, with ``dry_run``, only shown: a dry run changes
    nothing, and counts unrecorded backups as the next prune will once it adopts them).
    Raises BakupError (stage ``prune``) when storage cannot be listed or a deletion fails;
    backups deleted before the failure stay deleted, the rest stay.
    """
    with runlock.exclusive(target.location, target.name):
        return _prune_locked(settings, target, dry_run=dry_run, now=now)


def _prune_locked(
    settings: Settings, target: Target, *, dry_run: bool, now: datetime | None
) -> PrunePlan[Backup]:
    storage = open_storage(target.location)
    members = getattr(storage, "members", None)
    if members:  # several destinations: retention runs on each by itself
        plans = [_prune_one(target, member, dry_run=dry_run, now=now) for member in members]
        return plans[0]
    return _prune_one(target, storage, dry_run=dry_run, now=now)


def _prune_one(
    target: Target, storage: Storage, *, dry_run: bool, now: datetime | None
) -> PrunePlan[Backup]:
    label = target.name
    policy = target.retention
    dbname = target.database.dbname if target.database is not None else ""
    try:
        swept = lifecycle.Sweep([], [], [], set())
        if not dry_run:
            swept = lifecycle.sweep(storage, dbname, target=label)
            for leftover in swept.removed:
                log.info("Removed leftover of an interrupted backup: %s", leftover)
            for name in swept.finished_deleting:
                log.info("Finished deleting %s (an earlier prune was interrupted)", name)
        contents = read_contents(storage, dbname, label)
        # Unrecorded backups count only in a dry run (the real run has just adopted those it
        # could); one whose manifest is unreadable is never a candidate for deletion.
        candidates = [
            backup
            for backup in (contents.backups if dry_run else contents.recorded)
            if backup.name not in contents.unreadable
        ]
        plan = plan_prune(candidates, policy, now or datetime.now(UTC))
        log.info("Cleaning up old backups (keeping last %s)...", policy.max_backups or "all")
        log.info("Current backup count: %d", len(candidates))
        if policy.retention_days:
            log.info("Deleting backups older than %d days...", policy.retention_days)
        for backup, reason in plan.delete:
            if dry_run:
                log.info("Would delete %s: %s", backup.name, reason)
            else:
                lifecycle.retire(storage, backup)
                log.info("Deleted %s: %s", backup.name, reason)
        collected = collect(storage, dry_run=dry_run)
        for result in collected:
            if result.skipped:
                log.info("Chunks in %s not collected: %s", result.store, result.skipped)
            elif result.deleted:
                log.info(
                    "%s %d chunks no backup references (%s) in %s",
                    "Would delete" if dry_run else "Deleted",
                    len(result.deleted),
                    megabytes(result.deleted_bytes),
                    result.store,
                )
        if not dry_run:
            # Uploads are aborted here, after any backup of this run, not before it: the
            # clients that list them (boto3 above all) would otherwise sit in memory beside
            # the upload's buffers.
            for leftover in storage.abort_abandoned_uploads(swept.live, swept.removed):
                log.info("Removed leftover of an interrupted backup: %s", leftover)
    except BakupError as error:
        error.stage = "prune"
        events.emit(events.Event(events.PRUNE_FAILED, label, stage="prune", error=error.message))
        raise
    kept = [backup for backup, _ in plan.keep]
    unreadable = [b for b in contents.backups if b.name in contents.unreadable]
    log.info("Total backups: %d", len(kept) + len(unreadable))
    log.info("Total backup size: %s", megabytes(sum(b.size_bytes for b in kept + unreadable)))
    if not dry_run:
        events.emit(
            events.Event(
                events.PRUNE_FINISHED,
                label,
                details={
                    "deleted": [backup.name for backup, _ in plan.delete],
                    "stored_backups": len(kept),
                    "stored_bytes": sum(backup.size_bytes for backup in kept),
                    "oldest_created_at": min((b.created_at for b in kept), default=None),
                    "chunks": describe_collections(collected),
                    **_usage_details(storage, kept, collected),
                },
            )
        )
    return plan


def _usage_details(
    storage: Storage, kept: list[Backup], collected: list[Collection]
) -> dict[str, Any]:
    """The prune event's storage figures: what the kept backups take in ``storage`` (the
    chunk store's size from the collection that just listed it, when it ran) and the
    deduplication ratio. Empty when the chunk store cannot be listed: figures must not fail
    a prune."""
    finished = [result for result in collected if result.skipped is None]
    chunk_bytes = sum(r.stored_bytes for r in finished) if len(finished) == len(collected) else None
    try:
        usage = measure_usage(storage, kept, chunk_bytes)
    except BakupError as error:
        log.warning("WARNING: could not measure the storage used: %s", error.message)
        return {}
    return {"backup_stored_bytes": usage.stored_bytes, "dedup_ratio": usage.dedup_ratio}


def run_restore(
    settings: Settings,
    target: Target,
    name: str,
    destination: ConnectionParams,
    options: RestoreOptions | None = None,
) -> Backup:
    """Restore ``target``'s backup ``name`` (or ``latest``) into the database ``destination``,
    as ``options`` say (whole, one stream, by default).

    Returns the restored backup. Raises BakupError when the backup is missing or corrupted,
    the destination refuses it, or pg_restore fails.
    """
    storage = open_storage(target.location)
    backup = choose_backup(list_backups(storage), name)
    log.info("Restoring %s into %s", backup.name, destination.display())
    try:
        report = restore_backup(
            storage,
            backup,
            destination,
            pg_bin_dir=settings.pg_bin_dir,
            identities=settings.identities_for(backup),
            options=options,
        )
    except BakupError as error:
        log.error("ERROR: Failed to restore backup: %s", error.message)
        events.emit(
            events.Event(events.RESTORE_FAILED, target.name, stage=error.stage, error=error.message)
        )
        raise
    log.info(
        "Restore completed successfully in %.1f s (%s)",
        report.seconds,
        f"{report.jobs} parallel jobs, local copy of {megabytes(report.local_copy_bytes)}"
        if report.jobs > 1
        else "one stream, one transaction",
    )
    events.emit(
        events.Event(
            events.RESTORE_SUCCEEDED,
            target.name,
            details={"name": backup.name, "seconds": round(report.seconds, 3), "jobs": report.jobs},
        )
    )
    return backup


def run_verify(
    settings: Settings,
    target: Target,
    name: str = "latest",
    *,
    level: str = "integrity",
    retry_if: Callable[[BakupError], bool] = _never,
) -> Backup:
    """Verify ``target``'s backup ``name`` (or ``latest``) and record the result in its manifest.

    ``level`` is ``integrity`` or ``restore`` (a test restore into a scratch database, falling
    back to integrity, with a note, where no scratch database can be created). An adopted
    backup is described on the way (checksum, row counts), so later checks compare against
    it. An encrypted backup whose key is not on this machine is checked as far as possible
    without it (level ``checksum``). Returns the backup with its verification recorded.
    Raises BakupError (stage ``verify``) when a check fails; the failure is recorded in the
    manifest too, and its event is emitted even when recording it fails. A failure that
    ``retry_if`` says will be retried is only logged: the retry's outcome is what counts.
    """
    storage = open_storage(target.location)
    dbname = target.database.dbname if target.database is not None else ""
    backup = find_backup(storage, name, dbname, target.name)
    log.info("Verifying %s (%s)", backup.name, level)
    started = time.monotonic()
    result = VerifyResult(level="integrity")
    try:
        try:
            backup = _check_stored(settings, storage, backup, result)
            if level == "restore" and result.level == "integrity":
                _test_restore(settings, target, storage, backup, result)
        except BakupError:
            raise
        except Exception as error:  # a bug: still a failed verification, seen and counted
            raise VerifyError(
                f"verifying {backup.name} failed unexpectedly: {type(error).__name__}: "
                f"{str(error).splitlines()[0][:200] if str(error) else ''}",
                stage="verify",
            ) from error
    except BakupError as error:
        error.stage = "verify"
        result.seconds = time.monotonic() - started
        if retry_if(error):  # an attempt a retry may heal: a warning, not an incident
            log.warning(
                "WARNING: Verification attempt failed, it will be retried: %s", error.message
            )
            raise
        details = {**result.as_manifest(), "error": error.message}
        try:
            _record_verification(
                storage, backup.with_verification(False, datetime.now(UTC), details)
            )
        except BakupError as recording:
            log.error("ERROR: could not record the failed verification: %s", recording.message)
        log.error("ERROR: Verification failed: %s", error.message)
        events.emit(
            events.Event(
                events.VERIFY_FAILED,
                target.name,
                stage="verify",
                error=error.message,
                details={"name": backup.name, "duration_seconds": result.seconds},
            )
        )
        raise
    result.seconds = time.monotonic() - started
    recorded = {**result.as_manifest(), "requested": level}
    verified = backup.with_verification(True, datetime.now(UTC), recorded)
    _record_verification(storage, verified)
    for check in result.checks:
        log.info("ok: %s", check)
    log.info("Backup verified successfully: %s (%s)", backup.name, result.level)
    events.emit(
        events.Event(
            events.VERIFY_SUCCEEDED,
            target.name,
            details={
                "name": backup.name,
                "level": result.level,
                "requested": level,
                "duration_seconds": result.seconds,
                **(
                    {"restore_duration_seconds": result.restore_seconds}
                    if result.restore_seconds is not None
                    else {}
                ),
            },
        )
    )
    if level == "restore" and result.level != "restore":
        # The operator asked for restore tests and believes backups get them: say they do not.
        events.emit(
            events.Event(
                events.VERIFY_DEGRADED,
                target.name,
                stage="restore test",
                error=f"test restores are not possible, verified {result.level} only: "
                + "; ".join(result.notes),
                details={"name": backup.name, "level": result.level},
            )
        )
    return verified


def _check_stored(
    settings: Settings, storage: Storage, backup: Backup, result: VerifyResult
) -> Backup:
    """Read the stored backup back into ``result``'s checks; returns the backup, described
    if it was adopted. Raises BakupError when a check fails."""
    identities = settings.identities_for(backup)
    if backup.encrypted and identities is None and backup.described:
        keyless = check_without_key(storage, backup)
        result.level, result.checks, result.notes = keyless.level, keyless.checks, keyless.notes
        for note in keyless.notes:
            log.warning("WARNING: %s", note)
        return backup
    if not backup.described:
        backup, checks = describe_stored(storage, backup, settings.pg_bin_dir, identities)
        result.checks += checks
    else:
        result.checks += check_integrity(storage, backup, settings.pg_bin_dir, identities)
    for member in getattr(storage, "members", [])[1:]:  # every other copy, byte for byte
        check_checksum(member, backup)
        result.checks.append(f"the copy in {member.describe()} matches the manifest")
    return backup


def _test_restore(
    settings: Settings, target: Target, storage: Storage, backup: Backup, result: VerifyResult
) -> None:
    """Run the restore test into ``result``, or note why it fell back to integrity."""
    server = settings.verify_database or target.database
    if server is None:
        result.notes.append(
            "no server for a test restore (set VERIFY_DATABASE_URL): verified integrity only"
        )
        log.warning("WARNING: %s", result.notes[-1])
        return
    try:
        identities = settings.identities_for(backup)
        started = time.monotonic()
        result.checks += restore_test(storage, backup, server, settings.pg_bin_dir, identities)
        result.restore_seconds = time.monotonic() - started
    except PermissionError as error:
        advice = (
            "grant CREATEDB to the role of VERIFY_DATABASE_URL"
            if settings.verify_database is not None
            else "grant CREATEDB or set VERIFY_DATABASE_URL"
        )
        result.notes.append(f"{error}: {advice}; verified integrity only")
        log.warning("WARNING: %s", result.notes[-1])
        return
    result.level = "restore"
    log.info("Time to restore %s: %.1f s (test restore)", backup.name, result.restore_seconds)


def _record_verification(storage: Storage, backup: Backup) -> None:
    """Write the verification into the manifest of every destination, unless retention
    deleted the backup meanwhile."""
    failpoints.reach("verifying")
    members = getattr(storage, "members", None) or [storage]
    for member in members:
        if not lifecycle.record_verification(member, backup):
            log.info("Not recording the verification of %s: it was deleted meanwhile", backup.name)
