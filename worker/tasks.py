"""The tasks: thin wrappers that take database names, hold the locks, decide on retries and
hand the work to ``bakup.actions``.

backup -> verify -> prune runs for each scheduled backup; ``catch_up`` takes missed runs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task

from bakup import events
from bakup.actions import run_backup, run_prune, run_verify
from bakup.catalog import Backup, list_backups
from bakup.errors import BakupError
from bakup.redaction import redact
from bakup.settings import Settings
from bakup.storage import open_storage
from bakup.targets import Target
from notifications.channels.base import DeliveryError, Notification
from notifications.delivery import record, send_once
from notifications.render import Renderer
from notifications.summary import render_summary
from notifications.wire import from_message
from worker import observability, outbox, runs, runtime
from worker.app import app, queue_delivery
from worker.beat_schedule import (
    BACKUP_TASK,
    CATCH_UP_TASK,
    NOTIFY_TASK,
    RESTORE_METRICS_TASK,
    SUMMARY_TASK,
)
from worker.locks import database_lock, is_locked
from worker.policy import retry_delay, slot_ttl, verify_level_for

log = logging.getLogger("bakup")

NOTIFY_RETRIES = 5
VERIFY_RETRIES = 2
NO_EXPIRY: dict[str, Any] = {"expires": None}
# A retry message runs at its time; another message for the slot (beat, catch-up) arriving
# before this much after it leaves the retry to run.
RETRY_GRACE_SECONDS = 60


@app.task(name=BACKUP_TASK, bind=True, throws=(BakupError,), max_retries=None)
def backup(
    self: Task[Any, Any], target_name: str, scheduled: bool = True, slot: int | None = None
) -> dict[str, Any]:
    """Back up the database ``target_name``, then queue its verification.

    ``scheduled`` runs belong to a schedule slot (the latest fire time, unless ``slot`` names
    one), whose run record (``worker.runs``) decides whether this message runs an attempt:
    not when the slot ended, not beside a pending retry, not for a slot a newer one
    superseded. Transient failures are retried up to BACKUP_RETRIES times per slot, whoever
    retries. Returns what happened and how long it took. Raises BakupError when the backup
    fails for good; every way out leaves the slot's record in a final state or waiting for
    its retry.
    """
    started = time.monotonic()
    settings = runtime.settings()
    target = settings.target(target_name)
    client = runtime.redis_client()
    if scheduled and slot is None and target.schedule.enabled:
        slot = int(target.schedule.previous_fire(datetime.now(UTC)).timestamp())
    with database_lock(client, target.name, settings.lock_ttl) as held:
        if not held:
            log.info("Skipped backup of %s: another backup of it is running", target.name)
            return {"status": "skipped", "reason": "locked"}
        attempt = self.request.retries + 1
        if slot is not None:
            begun = _begin_attempt(client, target, slot, retry=bool(self.request.retries))
            if isinstance(begun, dict):
                return begun
            attempt = begun
        budget = settings.backup_retries

        def will_retry(error: BakupError) -> bool:
            return error.transient and attempt <= budget

        engine_started = time.monotonic()
        try:
            outcome = run_backup(settings, target, prune=False, retry_if=will_retry)
        except BakupError as error:
            if not will_retry(error):
                _settle(client, target, slot, runs.FAILED, error.message)
                raise
            delay = retry_delay(settings, attempt - 1)
            if slot is not None:
                _settle(
                    client,
                    target,
                    slot,
                    runs.WAITING,
                    error.message,
                    retry_at=time.time() + delay,
                )
            log.info(
                "Retrying the backup of %s in %.0f s (retry %d of %d)",
                target.name,
                delay,
                attempt,
                budget,
            )
            # No expiry for the retry (beat's message expires within one period), and no
            # Celery cap: the slot's record counts the attempts against BACKUP_RETRIES.
            raise self.retry(
                kwargs={"target_name": target_name, "scheduled": scheduled, "slot": slot},
                countdown=delay,
                exc=error,
                max_retries=None,
                **NO_EXPIRY,
            ) from None
        except BaseException as error:  # a time limit, a bug: never leave the slot running
            secret = target.database.password if target.database else None
            reason = redact(f"{type(error).__name__}: {error}", [secret])
            _settle(client, target, slot, runs.FAILED, reason)
            raise
        engine_seconds = time.monotonic() - engine_started
        _settle(client, target, slot, runs.SUCCEEDED, "")
    if settings.verify_level == "off":
        prune.delay(target.name)
    else:
        queue_verification(client, target, outcome.backup.name)
    return {
        "status": "succeeded",
        "name": outcome.backup.name,
        "task_seconds": time.monotonic() - started,
        "engine_seconds": engine_seconds,
    }


def _begin_attempt(
    client: redis.Redis, target: Target, slot: int, *, retry: bool
) -> int | dict[str, Any]:
    """Decide from the slot's record whether this message runs an attempt, and record it
    running (the caller holds the database's lock, so a record left running is a dead
    worker's). Returns the attempt's number, or the result of a skipped message."""
    settings = runtime.settings()
    run = runs.read(client, target.name, slot)
    now = time.time()
    if run is not None and run.state in runs.TERMINAL:
        log.info(
            "Skipped backup of %s: the run for %s already %s", target.name, _when(slot), run.state
        )
        return {"status": "skipped", "reason": f"slot {run.state}"}
    if not retry and run is not None and run.retry_at is not None and _retry_pending(run, now):
        log.info(
            "Skipped backup of %s: its run for %s waits for a retry at %s",
            target.name,
            _when(slot),
            _when(int(run.retry_at)),
        )
        return {"status": "skipped", "reason": "retry pending"}
    slot_time = datetime.fromtimestamp(slot, UTC)
    if target.schedule.enabled and target.schedule.next_fire(slot_time).timestamp() <= now:
        newer = _when(int(target.schedule.previous_fire(datetime.now(UTC)).timestamp()))
        runs.change(
            client,
            target.name,
            slot,
            allowed=(runs.NONE, runs.WAITING, runs.RUNNING),
            ttl=slot_ttl(target),
            state=runs.SKIPPED,
            error=f"superseded by the run for {newer}",
        )
        log.info(
            "Skipped backup of %s for %s: the run for %s supersedes it",
            target.name,
            _when(slot),
            newer,
        )
        return {"status": "skipped", "reason": "superseded"}
    attempt = (run.attempt if run is not None else 0) + 1
    if run is not None and run.state == runs.RUNNING:
        log.info(
            "Retaking the backup of %s for %s: its run was interrupted", target.name, _when(slot)
        )
        if attempt > settings.backup_retries + 1:
            message = (
                f"gave up after {attempt - 1} attempts, the last one interrupted (a time "
                "limit or a lost worker): see the worker's log; raise BACKUP_TIME_LIMIT if "
                "backups need longer"
            )
            _settle(client, target, slot, runs.FAILED, message, allowed=(runs.RUNNING,))
            log.error("ERROR: Failed to create backup: %s", message)
            events.emit(
                events.Event(events.BACKUP_FAILED, target.name, stage="internal", error=message)
            )
            return {"status": "failed", "reason": "interrupted too often"}
    changed, found = runs.change(
        client,
        target.name,
        slot,
        allowed=(runs.NONE, runs.WAITING, runs.RUNNING),
        ttl=slot_ttl(target),
        state=runs.RUNNING,
        attempt=attempt,
        retry_at="",
    )
    if not changed:
        log.info("Skipped backup of %s: the run for %s already %s", target.name, _when(slot), found)
        return {"status": "skipped", "reason": f"slot {found}"}
    return attempt


def _settle(
    client: redis.Redis,
    target: Target,
    slot: int | None,
    state: str,
    error: str,
    *,
    retry_at: float | None = None,
    allowed: tuple[str, ...] = (runs.RUNNING,),
) -> None:
    """Record the attempt's end in the slot's record. Redis failing here must not lose what
    the attempt did: it is tried a few times, then logged; a backup that finished stays
    stored and the catch-up check verifies and prunes it from what storage records."""
    if slot is None:
        return
    fields: dict[str, str | float] = {"state": state, "error": error[:300]}
    fields["retry_at"] = retry_at if retry_at is not None else ""
    for attempt in range(3):
        try:
            runs.change(client, target.name, slot, allowed=allowed, ttl=slot_ttl(target), **fields)
            return
        except redis.RedisError as failure:
            if attempt == 2:
                log.error(
                    "ERROR: could not record the run of %s for %s as %s: %s",
                    target.name,
                    _when(slot),
                    state,
                    failure,
                )
            else:
                time.sleep(1 + attempt)


@app.task(name="bakup.verify", bind=True, throws=(BakupError,))
def verify(self: Task[Any, Any], target_name: str, backup_name: str) -> dict[str, Any]:
    """Verify a new backup at VERIFY_LEVEL, then queue pruning (also when verification fails:
    retention never deletes the newest verified backup). Raises BakupError on failure."""
    settings = runtime.settings()
    target = settings.target(target_name)
    retries = self.request.retries

    def will_retry(error: BakupError) -> bool:
        return error.transient and retries < VERIFY_RETRIES

    try:
        dbname = target.database.dbname if target.database else ""
        stored = list_backups(open_storage(target.location), dbname, target.name)
        level = verify_level_for(settings, stored, datetime.now(UTC))
        verified = run_verify(settings, target, backup_name, level=level, retry_if=will_retry)
    except BakupError as error:
        if will_retry(error):
            raise self.retry(
                countdown=retry_delay(settings, self.request.retries), exc=error
            ) from None
        prune.delay(target.name)
        raise
    prune.delay(target.name)
    return {
        "status": "verified",
        "name": verified.name,
        "level": (verified.verification or {}).get("level"),
        # The measured time to restore, when this verification ran a test restore.
        "restore_duration_seconds": (verified.verification or {}).get("restore_duration_seconds"),
    }


@app.task(name="bakup.prune", throws=(BakupError,))
def prune(target_name: str) -> dict[str, Any]:
    """Apply ``target_name``'s retention policy. Raises BakupError on failure."""
    settings = runtime.settings()
    plan = run_prune(settings, settings.target(target_name))
    return {"status": "pruned", "deleted": [backup.name for backup, _ in plan.delete]}


@app.task(name=NOTIFY_TASK, bind=True)
def notify(
    self: Task[Any, Any], channel: str, message: dict[str, Any], entry: str | None = None
) -> dict[str, Any]:
    """Deliver one notification or ping over ``channel``: retried with backoff (honouring a
    429's Retry-After) while the failure is transient, counted either way. ``entry`` is its
    outbox record: kept (its redelivery pushed ahead) while this task delivers or waits to
    retry, removed once it is done, so a worker dying with it delays it by minutes, not hours.
    Never raises, so a channel's outage stays in its own task and never touches a backup."""
    payload = from_message(dict(message))
    database = payload.database if isinstance(payload, Notification) else ""
    settings = runtime.settings()
    client = runtime.redis_client()
    if entry is not None and not _hold(client, entry, settings.alert_redelivery_seconds):
        log.info("Skipped a %s delivery: it was already delivered", channel)
        return {"status": "skipped", "reason": "already delivered"}
    try:
        send_once(runtime.notify_settings(), channel, payload)
    except DeliveryError as error:
        if not error.permanent and self.request.retries < NOTIFY_RETRIES:
            delay = error.retry_after
            if delay is None:
                delay = retry_delay(settings, self.request.retries)
            delay = min(delay, 600)
            if entry is not None:
                _hold(client, entry, delay + settings.alert_redelivery_seconds)
            log.warning(
                "WARNING: %s notification failed, retrying in %.0f s: %s", channel, delay, error
            )
            raise self.retry(countdown=delay, max_retries=NOTIFY_RETRIES) from None
        log.error("ERROR: %s notification not delivered: %s", channel, error)
        record(channel, database, "failure", str(error))
        _done(client, entry)
        return {"status": "failed", "error": str(error)}
    record(channel, database, "success")
    _done(client, entry)
    return {"status": "delivered"}


def _hold(client: redis.Redis, entry: str, seconds: float) -> bool:
    """outbox.hold, deliver anyway when Redis cannot say (at least once)."""
    try:
        return outbox.hold(client, entry, seconds)
    except redis.RedisError as error:
        log.warning("WARNING: could not update the alert outbox: %s", error)
        return True


def _done(client: redis.Redis, entry: str | None) -> None:
    if entry is None:
        return
    try:
        outbox.done(client, entry)
    except redis.RedisError as error:  # it may be delivered once more: better than never
        log.warning("WARNING: could not update the alert outbox: %s", error)


@app.task(name=SUMMARY_TASK, bind=True, throws=(BakupError,))
def summary(self: Task[Any, Any]) -> dict[str, Any]:
    """Build and send the weekly summary, once per ISO week: the week is claimed in Redis only
    after the summary was built, so a retry of a failed build still sends it, while a second
    beat's or a redelivered message finds the week taken and sends nothing."""
    notify = runtime.notify_settings()
    if not notify.channels:
        return {"status": "skipped", "reason": "no channel configured"}
    now = datetime.now(UTC)
    message = render_summary(runtime.settings(), Renderer(notify.template_dir), now)
    year, week, _ = now.isocalendar()
    claimed = runtime.redis_client().set(
        f"bakup:summary:{year}-W{week:02d}", "sent", nx=True, ex=8 * 86400
    )
    if not claimed:
        log.info("Skipped the weekly summary: it was already sent for %d-W%02d", year, week)
        return {"status": "skipped", "reason": "already sent this week"}
    for channel in notify.channels:
        queue_delivery(channel.name, message)
    log.info(
        "Weekly summary for %d-W%02d queued for %d channel(s)", year, week, len(notify.channels)
    )
    return {"status": "sent", "week": f"{year}-W{week:02d}"}


@app.task(name=RESTORE_METRICS_TASK)
def restore_metrics() -> dict[str, Any]:
    """Set the metrics' gauges from the stored backups, in a pool child (never in the main
    process, which forks: see ``worker.observability.restore_gauges``)."""
    done = observability.restore_gauges(runtime.settings())
    return {"status": "restored" if done else "skipped"}


@app.task(name=CATCH_UP_TASK)
def catch_up() -> list[str]:
    """Queue a backup for every database whose latest scheduled run is missing: never ran
    (beat or machine down), its worker died mid-way, or its retry message was lost; and a
    verification for a newest backup that never got one (its worker or Redis failed right
    after it was stored). A slot whose retry is pending gets no second chain. Returns the
    databases queued."""
    settings = runtime.settings()
    client = runtime.redis_client()
    for entry, channel, message in outbox.overdue(client, settings.alert_redelivery_seconds):
        log.info("Queueing again a %s alert whose delivery did not finish", channel)
        app.send_task(NOTIFY_TASK, args=[channel, message, entry], queue="bakup")
    now = datetime.now(UTC)
    queued = []
    for target in settings.targets:
        if not target.schedule.enabled or target.database is None:
            continue
        slot_time = target.schedule.previous_fire(now)
        # Leave the regular run a moment to start before calling it missed.
        grace = min(60.0, target.schedule.period(now).total_seconds() / 4)
        slot = int(slot_time.timestamp())
        if (now - slot_time).total_seconds() < grace:
            continue
        run = runs.read(client, target.name, slot)
        if run is not None and (run.state in runs.TERMINAL or _retry_pending(run, time.time())):
            _verify_if_missed(client, settings, target)
            continue
        if is_locked(client, target.name):
            continue
        dbname = target.database.dbname
        backups = list_backups(open_storage(target.location), dbname, target.name)
        if backups and backups[-1].created_at >= slot_time:
            _verify_if_missed(client, settings, target, backups)
            continue
        log.info(
            "Catching up: no backup of %s for its %s run; taking one now",
            target.name,
            _when(slot),
        )
        backup.delay(target.name, scheduled=True, slot=slot)
        queued.append(target.name)
    return queued


def _retry_pending(run: runs.Run | None, now: float) -> bool:
    """Whether ``run`` waits for a retry that is not overdue."""
    return (
        run is not None
        and run.state == runs.WAITING
        and run.retry_at is not None
        and now < run.retry_at + RETRY_GRACE_SECONDS
    )


def queue_verification(client: redis.Redis, target: Target, name: str) -> bool:
    """Queue the verification of backup ``name`` once: a key records that it was queued, so
    the catch-up check does not queue it again while it runs. Returns whether it was queued."""
    key = f"{runs.PREFIX}:verify:{target.name}:{name}"
    if not client.set(key, "queued", nx=True, ex=runtime.settings().backup_time_limit + 3600):
        return False
    try:
        verify.delay(target.name, name)
    except Exception:
        client.delete(key)
        raise
    return True


def _verify_if_missed(
    client: redis.Redis, settings: Settings, target: Target, backups: list[Backup] | None = None
) -> None:
    """Queue the verification of the newest backup if it was never verified and is old
    enough that its own verification should have started."""
    if settings.verify_level == "off":
        return
    if backups is None:
        dbname = target.database.dbname if target.database else ""
        backups = list_backups(open_storage(target.location), dbname, target.name)
    complete = [b for b in backups if b.status == "complete"]
    if not complete or complete[-1].verified is not None:
        return
    newest = complete[-1]
    finished = newest.finished_at or newest.created_at
    if (datetime.now(UTC) - finished).total_seconds() < settings.catch_up_interval:
        return
    if queue_verification(client, target, newest.name):
        log.info("Catching up: %s was never verified; verifying it now", newest.name)


def _when(slot: int) -> str:
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
