"""The beat table and the retry delays of the worker."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bakup.schedule import parse_schedule
from bakup.settings import Settings
from worker.beat_schedule import SlotSchedule, build_beat_schedule
from worker.policy import retry_delay


def settings_with(tmp_path: Path, **env: str) -> Settings:
    config = tmp_path / "bakup.toml"
    config.write_text(
        """
[[targets]]
name = "daily"
url = "postgresql://u@h/a"

[[targets]]
name = "often"
url = "postgresql://u@h/b"
schedule = "every 30s"

[[targets]]
name = "manual"
url = "postgresql://u@h/c"
schedule = "disable"
"""
    )
    return Settings.from_env({"BAKUP_CONFIG": str(config), **env})


def test_each_scheduled_database_gets_one_beat_entry_and_disabled_ones_none(tmp_path: Path) -> None:
    table = build_beat_schedule(settings_with(tmp_path, CATCH_UP_INTERVAL="120"))
    assert set(table) == {"backup daily", "backup often", "catch up missed backups"}
    daily = table["backup daily"]
    assert daily["task"] == "bakup.backup" and daily["args"] == ("daily",)
    assert isinstance(daily["schedule"], SlotSchedule)
    assert daily["schedule"].slots.cron == "0 2 * * *"
    assert daily["options"]["expires"] == 86400
    often = table["backup often"]["schedule"]
    assert isinstance(often, SlotSchedule) and often.slots.interval == timedelta(seconds=30)
    assert table["catch up missed backups"]["schedule"] == timedelta(seconds=120)


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, RETRY_BASE_SECONDS="10", RETRY_MAX_SECONDS="100")
    for retries, ceiling in [(0, 10), (1, 20), (2, 40), (3, 80), (4, 100), (9, 100)]:
        delays = [retry_delay(settings, retries) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len({round(delay, 6) for delay in delays}) > 100  # jittered, not fixed


def test_an_interval_fires_at_the_epoch_aligned_slots_catch_up_uses_not_from_beats_start() -> None:
    every = SlotSchedule(parse_schedule("every 30s"))
    now = datetime.now(UTC)
    slot = every.slots.previous_fire(now)
    assert slot.timestamp() % 30 == 0
    assert every.is_due(slot - timedelta(seconds=1)).is_due  # last ran before this slot
    state = every.is_due(slot + timedelta(seconds=0.5))  # already ran in this slot
    assert not state.is_due
    assert 0 <= state.next <= 30
    assert pickle.loads(pickle.dumps(every)) == every  # beat's schedule file keeps it


def test_a_cron_entry_is_due_once_per_fire_time() -> None:
    nightly = SlotSchedule(parse_schedule("0 2 * * *"))
    fire = nightly.slots.previous_fire(datetime.now(UTC))
    assert nightly.is_due(fire - timedelta(hours=1)).is_due
    assert not nightly.is_due(fire + timedelta(minutes=1)).is_due


def test_verify_frequency_test_restores_at_most_that_often(tmp_path: Path) -> None:
    from bakup.catalog import unrecorded_backup
    from worker.policy import verify_level_for

    weekly = settings_with(tmp_path, VERIFY_FREQUENCY="7d")
    now = datetime(2026, 11, 25, tzinfo=UTC)

    def restored(days_ago: int, level: str = "restore"):
        backup = unrecorded_backup("postgres_backup_20261101_000000.sql.gz", 1, "a", "")
        return backup.with_verification(True, now - timedelta(days=days_ago), {"level": level})

    assert verify_level_for(weekly, [], now) == "restore"
    assert verify_level_for(weekly, [restored(3)], now) == "integrity"
    assert verify_level_for(weekly, [restored(8)], now) == "restore"
    assert verify_level_for(weekly, [restored(1, "integrity")], now) == "restore"
    every_time = settings_with(tmp_path)
    assert verify_level_for(every_time, [restored(0)], now) == "restore"
    problems = settings_problems(tmp_path, VERIFY_FREQUENCY="weekly")
    assert any("VERIFY_FREQUENCY" in problem for problem in problems)


def settings_problems(tmp_path: Path, **env: str) -> list[str]:
    import pytest

    from bakup.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        settings_with(tmp_path, **env)
    return raised.value.problems
