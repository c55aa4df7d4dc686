"""Retention as a pure function: given the complete backups, a policy and the time, decide what
to keep and what to delete, with a reason for each.

A backup is kept when any rule keeps it:

- it is the newest backup, or the newest one that passed verification, whatever its age (if
  backups have failed for 40 days, a 30-day limit must not wipe the last good one);
- the original script's limits: among the newest MAX_BACKUPS and no older than RETENTION_DAYS
  (0 turns a limit off);
- grandfather-father-son: the newest backup of each of the last KEEP_DAILY days, KEEP_WEEKLY
  ISO weeks and KEEP_MONTHLY months that have backups.

Everything else is deleted, and the reason says which limit it fell outside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, Protocol, TypeVar


class BackupLike(Protocol):
    """What retention needs to know of a backup."""

    @property
    def name(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def verified(self) -> bool | None: ...


B = TypeVar("B", bound=BackupLike)


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups to keep, and for how long. Zero turns a rule off."""

    retention_days: int = 30
    max_backups: int = 30
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def describe(self) -> str:
        """Return the policy in a few words, for logs."""
        parts = [
            f"last {self.max_backups}" if self.max_backups else "no count limit",
            f"{self.retention_days} days" if self.retention_days else "no age limit",
        ]
        for label, count in (
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
        ):
            if count:
                parts.append(f"{count} {label}")
        return ", ".join(parts)


@dataclass
class PrunePlan(Generic[B]):
    """The decision: each kept backup with its reasons, each deleted one with its reason."""

    keep: list[tuple[B, list[str]]] = field(default_factory=list)
    delete: list[tuple[B, str]] = field(default_factory=list)


def _newest_first(backup: BackupLike) -> tuple[datetime, str]:
    return (backup.created_at, backup.name)


def plan_prune(backups: Sequence[B], policy: RetentionPolicy, now: datetime) -> PrunePlan[B]:
    """Decide which backups to keep and which to delete.

    Given complete backups (in any order), the policy and the current time (timezone-aware,
    like the backups' ``created_at``); returns a PrunePlan listing every backup exactly once,
    newest first. Raises nothing.
    """
    ordered = sorted(backups, key=_newest_first, reverse=True)
    reasons: dict[int, list[str]] = {index: [] for index in range(len(ordered))}

    if ordered:
        reasons[0].append("newest backup")
    verified = [index for index, backup in enumerate(ordered) if backup.verified]
    if verified:
        reasons[verified[0]].append("newest verified backup")

    age_limit = timedelta(days=policy.retention_days)
    delete_reason: dict[int, str] = {}
    for index, backup in enumerate(ordered):
        if policy.max_backups and index >= policy.max_backups:
            delete_reason[index] = f"beyond the newest {policy.max_backups} backups"
        elif policy.retention_days and now - backup.created_at > age_limit:
            age_days = (now - backup.created_at).days
            delete_reason[index] = f"older than {policy.retention_days} days ({age_days} days old)"
        else:
            reasons[index].append(_within_limits(policy))

    periods: list[tuple[str, int, Callable[[datetime], str]]] = [
        ("daily", policy.keep_daily, lambda moment: moment.strftime("%Y-%m-%d")),
        (
            "weekly",
            policy.keep_weekly,
            lambda moment: "{:04d}-W{:02d}".format(*moment.isocalendar()[:2]),
        ),
        ("monthly", policy.keep_monthly, lambda moment: moment.strftime("%Y-%m")),
    ]
    for label, count, period_of in periods:
        seen: set[str] = set()
        for index, backup in enumerate(ordered):
            if len(seen) >= count:
                break
            period = period_of(backup.created_at)
            if period not in seen:
                seen.add(period)
                reasons[index].append(f"{label} {period}")

    plan: PrunePlan[B] = PrunePlan()
    for index, backup in enumerate(ordered):
        if reasons[index]:
            plan.keep.append((backup, reasons[index]))
        else:
            plan.delete.append((backup, delete_reason[index]))
    return plan


def _within_limits(policy: RetentionPolicy) -> str:
    if policy.max_backups and policy.retention_days:
        return f"within the newest {policy.max_backups} and the last {policy.retention_days} days"
    if policy.max_backups:
        return f"within the newest {policy.max_backups}"
    if policy.retention_days:
        return f"within the last {policy.retention_days} days"
    return "no count or age limit"
