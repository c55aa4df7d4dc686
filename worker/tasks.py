"""The tasks: thin wrappers that take database names, hold the locks, decide on retries and
hand the work to ``bakup.actions``.

backup -> verify -> prune runs for each scheduled backup; ``catch_up`` takes missed runs.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import Task

from bakup.actions import run_backup, run_prune, run_verify
from bakup.catalog import list_backups
from bakup.errors import BakupError
from bakup.storage import open_storage
from notifications.channels.base import DeliveryError, Notification
from notifications.delivery import record, send_once
from notifications.render import Renderer
from notifications.summary import render_summary
from notifications.wire import from_message, to_message
from worker import observability, runtime
from worker.app import app
from worker.beat_schedule import (
    BACKUP_TASK,
    CATCH_UP_TASK,
    NOTIFY_TASK,
    RESTORE_METRICS_TASK,
    SUMMARY_TASK,
)
from worker.locks import database_lock, is_locked, set_slot_state, slot_state
from worker.policy import retry_delay, slot_ttl

log = logging.getLogger("bakup")

NOTIFY_RETRIES = 5


@app.task(name=BACKUP_TASK, bind=True, throws=(BakupError,))
def backup(
    self: Task[Any, Any], target_name: str, scheduled: bool = True, slot: int | None = None
) -> dict[str, Any]:
    """Back up the database ``target_name``, then queue its verification.

    ``scheduled`` runs belong to a schedule slot (the latest fire time, unless ``slot`` names
    one): a slot that already ran is skipped. Returns what happened and how long it took.
    Raises BakupError when the backup fails for good (after retries for transient failures).
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
        if slot is not None:
            state = slot_state(client, target.name, slot)
            if state in ("succeeded", "failed"):
                log.info(
                    "Skipped backup of %s: the run for %s already %s",
                    target.name,
                    _when(slot),
                    state,
                )
                return {"status": "skipped", "reason": f"slot {state}"}
            if state == "running" and not self.request.retries:
                log.info(
                    "Retaking the backup of %s for %s: its run was interrupted",
                    target.name,
                    _when(slot),
                )
            set_slot_state(client, target.name, slot, "running", slot_ttl(target))
        engine_started = time.monotonic()
        try:
            outcome = run_backup(settings, target, prune=False)
        except BakupError as error:
            if error.transient and self.request.retries < settings.backup_retries:
                delay = retry_delay(settings, self.request.retries)
                log.info(
                    "Retrying the backup of %s in %.0f s (retry %d of %d)",
                    target.name,
                    delay,
                    self.request.retries + 1,
                    settings.backup_retries,
                )
                raise self.retry(
                    kwargs={"target_name": target_name, "scheduled": scheduled, "slot": slot},
                    countdown=delay,
                    exc=error,
                ) from None
            if slot is not None:
                set_slot_state(client, target.name, slot, "failed", slot_ttl(target))
            raise
        engine_seconds = time.monotonic() - engine_started
        if slot is not None:
            set_slot_state(client, target.name, slot, "succeeded", slot_ttl(target))
    if settings.verify_level == "off":
        prune.delay(target.name)
    else:
        verify.delay(target.name, outcome.backup.name)
    return {
        "status": "succeeded",
        "name": outcome.backup.name,
        "task_seconds": time.monotonic() - started,
        "engine_seconds": engine_seconds,
    }


@app.task(name="bakup.verify", bind=True, throws=(BakupError,))
def verify(self: Task[Any, Any], target_name: str, backup_name: str) -> dict[str, Any]:
    """Verify a new backup at VERIFY_LEVEL, then queue pruning (also when verification fails:
    retention never deletes the newest verified backup). Raises BakupError on failure."""
    settings = runtime.settings()
    target = settings.target(target_name)
    try:
        verified = run_verify(settings, target, backup_name, level=settings.verify_level)
    except BakupError as error:
        if error.transient and self.request.retries < 2:
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
    }


@app.task(name="bakup.prune", throws=(BakupError,))
def prune(target_name: str) -> dict[str, Any]:
    """Apply ``target_name``'s retention policy. Raises BakupError on failure."""
    settings = runtime.settings()
    plan = run_prune(settings, settings.target(target_name))
    return {"status": "pruned", "deleted": [backup.name for backup, _ in plan.delete]}


@app.task(name=NOTIFY_TASK, bind=True)
def notify(self: Task[Any, Any], channel: str, message: dict[str, Any]) -> dict[str, Any]:
    """Deliver one notification or ping over ``channel``: retried with backoff (honouring a
    429's Retry-After) while the failure is transient, counted either way. Never raises, so a
    channel's outage stays in its own task and never touches a backup."""
    payload = from_message(dict(message))
    database = payload.database if isinstance(payload, Notification) else ""
    try:
        send_once(runtime.notify_settings(), channel, payload)
    except DeliveryError as error:
        if not error.permanent and self.request.retries < NOTIFY_RETRIES:
            delay = error.retry_after
            if delay is None:
                delay = retry_delay(runtime.settings(), self.request.retries)
            log.warning(
                "WARNING: %s notification failed, retrying in %.0f s: %s", channel, delay, error
            )
            raise self.retry(countdown=min(delay, 600), max_retries=NOTIFY_RETRIES) from None
        log.error("ERROR: %s notification not delivered: %s", channel, error)
        record(channel, database, "failure", str(error))
        return {"status": "failed", "error": str(error)}
    record(channel, database, "success")
    return {"status": "delivered"}


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
        app.send_task(NOTIFY_TASK, args=[channel.name, to_message(message)], queue="bakup")
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
    (beat or machine down), or its worker died mid-way. Returns the databases queued."""
    settings = runtime.settings()
    client = runtime.redis_client()
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
        if slot_state(client, target.name, slot) in ("succeeded", "failed"):
            continue
        if is_locked(client, target.name):
            continue
        backups = list_backups(open_storage(target.location))
        if backups and backups[-1].created_at >= slot_time:
            continue
        log.info(
            "Catching up: no backup of %s for its %s run; taking one now",
            target.name,
            _when(slot),
        )
        backup.delay(target.name, scheduled=True, slot=slot)
        queued.append(target.name)
    return queued


def _when(slot: int) -> str:
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
