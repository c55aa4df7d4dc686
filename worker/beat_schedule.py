"""The beat table: one backup entry per database with a schedule, and a periodic check for
missed runs. Built from the settings, so what is configured is what is scheduled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import BaseSchedule, schedstate

from bakup.schedule import Schedule
from bakup.settings import Settings

BACKUP_TASK = "bakup.backup"
CATCH_UP_TASK = "bakup.catch_up"
NOTIFY_TASK = "bakup.notify"
SUMMARY_TASK = "bakup.summary"
RESTORE_METRICS_TASK = "bakup.restore_metrics"


class SlotSchedule(BaseSchedule):
    """A beat schedule that fires at the slots of a bakup Schedule: the very fire times
    (from cronsim, intervals aligned to the epoch) that the run records and the catch-up
    check use, so beat's messages and the slots they are for always agree. (Celery's own
    interval schedule counts from beat's start instead.)"""

    def __init__(self, slots: Schedule) -> None:
        super().__init__()
        self.slots = slots

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time until the next slot."""
        now = datetime.now(UTC)
        return self.slots.next_fire(now) - now

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Due when the latest slot began after the entry last ran; next check at the next
        slot."""
        now = datetime.now(UTC)
        last = last_run_at if last_run_at.tzinfo else last_run_at.replace(tzinfo=UTC)
        wait = max((self.slots.next_fire(now) - now).total_seconds(), 0.0)
        return schedstate(last < self.slots.previous_fire(now), wait)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.slots,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotSchedule) and other.slots == self.slots

    def __hash__(self) -> int:
        return hash(self.slots)

    def __repr__(self) -> str:
        return f"<SlotSchedule {self.slots.text}>"


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
            "schedule": SlotSchedule(target.schedule),
            "args": (target.name,),
            "options": {"expires": expires},
        }
    if summary is not None and summary.enabled:
        entries["weekly summary"] = {"task": SUMMARY_TASK, "schedule": SlotSchedule(summary)}
    entries["catch up missed backups"] = {
        "task": CATCH_UP_TASK,
        "schedule": timedelta(seconds=settings.catch_up_interval),
        "options": {"expires": settings.catch_up_interval},
    }
    return entries
