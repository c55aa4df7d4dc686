"""Schedules: parsing, and the slot (latest fire time) a moment belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bakup.schedule import ScheduleError, parse_schedule

MOMENTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


def test_daily_cron_line_fires_at_two_in_the_morning_utc() -> None:
    schedule = parse_schedule("0 2 * * *")
    now = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
    assert schedule.previous_fire(now) == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert schedule.next_fire(now) == datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    assert schedule.period(now) == timedelta(days=1)


def test_the_fire_time_itself_belongs_to_its_own_slot() -> None:
    schedule = parse_schedule("0 2 * * *")
    at_two = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert schedule.previous_fire(at_two) == at_two
    just_before = at_two - timedelta(seconds=1)
    assert schedule.previous_fire(just_before) == at_two - timedelta(days=1)


def test_times_in_other_zones_are_read_as_the_same_instant() -> None:
    schedule = parse_schedule("0 2 * * *")
    paris = timezone(timedelta(hours=1))
    now = datetime(2026, 11, 24, 3, 30, tzinfo=paris)  # 02:30 UTC
    assert schedule.previous_fire(now) == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("every 30s", 30), ("every 5m", 300), ("@every 6h", 21600), ("every 1d", 86400)],
)
def test_intervals_are_accepted_in_seconds_minutes_hours_and_days(text: str, seconds: int) -> None:
    schedule = parse_schedule(text)
    assert schedule.interval == timedelta(seconds=seconds)
    assert schedule.enabled


@pytest.mark.parametrize("text", ["disable", "DISABLE", "off"])
def test_disable_turns_an_entry_off(text: str) -> None:
    schedule = parse_schedule(text)
    assert not schedule.enabled
    with pytest.raises(ScheduleError):
        schedule.previous_fire(datetime.now(UTC))


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("0 2 * *", "five fields"),
        ("61 2 * * *", "minute"),
        ("0 25 * * *", "hour"),
        ("every 0s", "positive"),
        ("whenever", "five fields"),
    ],
)
def test_bad_schedules_name_the_variable_and_the_problem(text: str, phrase: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(text, name="BACKUP_SCHEDULE")
    message = str(raised.value)
    assert "BACKUP_SCHEDULE" in message
    assert phrase in message.lower()


@given(
    MOMENTS, st.sampled_from(["*/15 * * * *", "0 2 * * *", "30 4 * * 1", "every 7s", "every 2h"])
)
def test_the_slot_is_the_latest_fire_time_not_after_now(now: datetime, text: str) -> None:
    schedule = parse_schedule(text)
    slot = schedule.previous_fire(now)
    following = schedule.next_fire(now)
    assert slot <= now < following
    assert schedule.previous_fire(slot) == slot
    assert schedule.previous_fire(following - timedelta(seconds=1)) == slot
