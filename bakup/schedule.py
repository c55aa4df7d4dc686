"""Schedules: a cron line (``0 2 * * *``, UTC), an interval (``every 30s``, ``every 6h``), or
``disable``.

Besides telling the scheduler when to fire, a schedule answers the question that catch-up and
de-duplication need: which *slot* does a moment belong to (the latest fire time at or before it)?
Two runs for the same slot are one run too many; a slot with no backup is a missed run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cronsim import CronSim, CronSimError

DISABLED = "disable"
_INTERVAL = re.compile(r"^(?:@?every\s+)(\d+)\s*(s|m|h|d)$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class ScheduleError(ValueError):
    """The schedule text is neither a cron line, an interval nor ``disable``."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule. ``cron`` or ``interval`` is set, or neither when disabled."""

    text: str
    cron: str | None = None
    interval: timedelta | None = None

    @property
    def enabled(self) -> bool:
        """Whether this schedule ever fires."""
        return self.cron is not None or self.interval is not None

    def previous_fire(self, now: datetime) -> datetime:
        """Return the latest fire time at or before ``now`` (timezone-aware, UTC).

        Raises ScheduleError for a disabled schedule.
        """
        now = now.astimezone(UTC)
        if self.interval is not None:
            period = self.interval.total_seconds()
            return datetime.fromtimestamp(now.timestamp() // period * period, UTC)
        if self.cron is None:
            raise ScheduleError("a disabled schedule never fires")
        # CronSim's reverse iteration excludes its start, so start just after this minute.
        start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        return next(CronSim(self.cron, start, reverse=True)).astimezone(UTC)

    def next_fire(self, now: datetime) -> datetime:
        """Return the first fire time after ``now``. Raises ScheduleError when disabled."""
        now = now.astimezone(UTC)
        if self.interval is not None:
            return self.previous_fire(now) + self.interval
        if self.cron is None:
            raise ScheduleError("a disabled schedule never fires")
        return next(CronSim(self.cron, now)).astimezone(UTC)

    def period(self, now: datetime) -> timedelta:
        """Return the time between the fire before ``now`` and the next one."""
        return self.next_fire(now) - self.previous_fire(now)


def parse_schedule(text: str, *, name: str = "BACKUP_SCHEDULE") -> Schedule:
    """Parse a schedule; given its text and the variable it came from (for messages).

    Returns the Schedule. Raises ScheduleError naming the variable and what is wrong.
    """
    cleaned = " ".join(text.split())
    if cleaned.lower() in (DISABLED, "disabled", "off"):
        return Schedule(cleaned)
    interval = _INTERVAL.match(cleaned)
    if interval:
        amount = int(interval.group(1))
        if amount <= 0:
            raise ScheduleError(f"{name} is {text!r}: the interval must be positive")
        delta = timedelta(**{_UNITS[interval.group(2).lower()]: amount})
        return Schedule(cleaned, interval=delta)
    fields = cleaned.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"{name} is {text!r}: use a cron line of five fields such as '0 2 * * *' (UTC), "
            "an interval such as 'every 30m', or 'disable'"
        )
    try:
        CronSim(cleaned, datetime.now(UTC))
    except CronSimError as error:
        raise ScheduleError(f"{name} is {text!r}: {error}") from None
    return Schedule(cleaned, cron=cleaned)
