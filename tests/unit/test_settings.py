"""Configuration from the environment: defaults, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakup.errors import ConfigError
from bakup.settings import Settings

URL = "postgresql://app:hunter2-secret@db:5432/app"


def problems_of(env: dict[str, str], **kwargs: bool) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env, **kwargs)
    assert raised.value.exit_code == 2
    return raised.value.problems


def test_defaults_are_the_original_scripts() -> None:
    settings = Settings.from_env({"DATABASE_URL": URL})
    assert settings.backup_dir == Path("./backups")
    assert (settings.retention.retention_days, settings.retention.max_backups) == (30, 30)
    assert settings.compression == "gzip" and settings.compression_level is None
    assert settings.schedule.cron == "0 2 * * *"
    assert settings.verify_level == "restore"


def test_every_invalid_variable_is_reported_at_once_by_name() -> None:
    problems = problems_of(
        {
            "DATABASE_URL": "postgresql://app:hunter2-secret@db:port/app",
            "RETENTION_DAYS": "thirty",
            "MAX_BACKUPS": "-3",
            "KEEP_WEEKLY": "1.5",
            "COMPRESSION": "lz4",
            "PG_BIN_DIR": "/no/such/dir",
            "BACKUP_SCHEDULE": "at two",
            "VERIFY_LEVEL": "paranoid",
            "REDIS_URL": "http://redis",
        }
    )
    names = [
        "DATABASE_URL",
        "RETENTION_DAYS",
        "MAX_BACKUPS",
        "KEEP_WEEKLY",
        "COMPRESSION",
        "PG_BIN_DIR",
        "BACKUP_SCHEDULE",
        "VERIFY_LEVEL",
        "REDIS_URL",
    ]
    assert len(problems) == len(names)
    for name, problem in zip(names, problems, strict=True):
        assert problem.startswith(name), (name, problem)
    assert not any("hunter2" in problem for problem in problems)


@pytest.mark.parametrize(("compression", "level"), [("gzip", "4"), ("zstd", "23"), ("none", "1")])
def test_compression_level_must_fit_the_algorithm(compression: str, level: str) -> None:
    [problem] = problems_of(
        {"DATABASE_URL": URL, "COMPRESSION": compression, "COMPRESSION_LEVEL": level}
    )
    assert "COMPRESSION_LEVEL" in problem and compression in problem


def test_database_url_is_required_only_when_the_command_needs_it() -> None:
    [problem] = problems_of({})
    assert problem.startswith("DATABASE_URL is not set")
    settings = Settings.from_env({}, require_database=False)
    assert settings.database is None


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(URL + "\n")
    settings = Settings.from_env({"DATABASE_URL_FILE": str(secret)})
    assert settings.database is not None and settings.database.password == "hunter2-secret"


def test_a_secret_set_twice_or_in_an_unreadable_file_is_a_problem(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(URL)
    [twice] = problems_of({"DATABASE_URL": URL, "DATABASE_URL_FILE": str(secret)})
    assert "both set" in twice
    [unreadable] = problems_of({"DATABASE_URL_FILE": str(tmp_path / "missing")})
    assert unreadable.startswith("DATABASE_URL_FILE: cannot read")
