"""The beat table: one backup entry per database with a schedule, and a periodic check for
missed runs. Built from the settings, so what is configured is what is scheduled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab
from celery.schedules import schedule as interval_schedule

from bakup.schedule import Schedule
from bakup.settings import Settings

BACKUP_TASK = "bakup.backup"
CATCH_UP_TASK = "bakup.catch_up"
NOTIFY_TASK = "bakup.notify"
SUMMARY_TASK = "bakup.summary"
RESTORE_METRICS_TASK = "bakup.restore_metrics"


def celery_schedule(schedule: Schedule) -> crontab | interval_schedule:
    """Return Celery's form of an enabled schedule (cron lines are read as UTC)."""
    if schedule.interval is not None:
        return interval_schedule(run_every=schedule.interval)
    assert schedule.cron is not None
    minute, hour, day_of_month, month_of_year, day_of_week = schedule.cron.split(" ")
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


def build_beat_schedule(
    settings: Settings, summary: Schedule | None = None
) -> dict[str, dict[str, Any]]:
    """Return Celery's ``beat_schedule`` for these settings (and the summary's schedule)."""
    entries: dict[str, dict[str, Any]] = {}
    now = datetime.now(UTC)
    for target in settings.targets:
        if not target.schedule.enabled:
            continue
        # A message not started within one period is dropped: the catch-up check takes the
        # backup instead, once, rather than a backlog of stale runs after an outage.
        expires = max(target.schedule.period(now).total_seconds(), 10)
        entries[f"backup {target.name}"] = {
            "task": BACKUP_TASK,
            "schedule": celery_schedule(target.schedule),
            "args": (target.name,),
            "options": {"expires": expires},
        }
    if summary is not None and summary.enabled:
        entries["weekly summary"] = {"task": SUMMARY_TASK, "schedule": celery_schedule(summary)}
    entries["catch up missed backups"] = {
        "task": CATCH_UP_TASK,
        "schedule": timedelta(seconds=settings.catch_up_interval),
        "options": {"expires": settings.catch_up_interval},
    }
    return entries
