"""The next-due deadline the staleness alert compares with: the schedule's first fire time
after the newest success, recomputed at every success (not a period frozen at start-up)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from bakup import events
from bakup.settings import Settings
from metrics.definitions import create_metrics
from metrics.recorder import Recorder

URL = "postgresql://app:pw@db:5432/app"


def next_due_after_success(schedule: str, finished: datetime) -> float | None:
    registry = CollectorRegistry()
    recorder = Recorder(create_metrics(registry))
    settings = Settings.from_env({"DATABASE_URL": URL, "BACKUP_SCHEDULE": schedule})
    recorder.initialize(settings)
    recorder(
        events.Event(
            events.BACKUP_SUCCEEDED,
            "app",
            at=finished,
            details={
                "name": "x",
                "size_bytes": 1,
                "raw_size_bytes": 1,
                "duration_seconds": 1.0,
                "created_at": finished,
            },
        )
    )
    return registry.get_sample_value("bakup_backup_next_due_timestamp_seconds", {"database": "app"})


def test_a_friday_backup_of_a_weekday_schedule_is_next_due_on_monday() -> None:
    friday = datetime(2026, 11, 27, 2, 0, 5, tzinfo=UTC)
    due = next_due_after_success("0 2 * * 1-5", friday)
    assert due == datetime(2026, 11, 30, 2, 0, tzinfo=UTC).timestamp()


def test_a_tuesday_backup_is_next_due_on_wednesday() -> None:
    tuesday = datetime(2026, 11, 24, 2, 0, 5, tzinfo=UTC)
    due = next_due_after_success("0 2 * * 1-5", tuesday)
    assert due == datetime(2026, 11, 25, 2, 0, tzinfo=UTC).timestamp()


def test_an_unscheduled_database_has_no_deadline() -> None:
    assert next_due_after_success("disable", datetime(2026, 11, 24, tzinfo=UTC)) == 0
