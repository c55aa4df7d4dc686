"""The beat table and the retry delays of the worker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from celery.schedules import crontab
from celery.schedules import schedule as interval_schedule

from bakup.settings import Settings
from worker.beat_schedule import build_beat_schedule
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
    assert isinstance(daily["schedule"], crontab)
    assert daily["schedule"].hour == {2} and daily["schedule"].minute == {0}
    assert daily["options"]["expires"] == 86400
    often = table["backup often"]["schedule"]
    assert isinstance(often, interval_schedule) and often.run_every == timedelta(seconds=30)
    assert table["catch up missed backups"]["schedule"] == timedelta(seconds=120)


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, RETRY_BASE_SECONDS="10", RETRY_MAX_SECONDS="100")
    for retries, ceiling in [(0, 10), (1, 20), (2, 40), (3, 80), (4, 100), (9, 100)]:
        delays = [retry_delay(settings, retries) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len({round(delay, 6) for delay in delays}) > 100  # jittered, not fixed
