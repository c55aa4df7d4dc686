"""Targets: the one-database default and a BAKUP_CONFIG file of several."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakup.errors import ConfigError
from bakup.settings import Settings

URL = "postgresql://app:s3cret-pw@db.example.com:5432/app"


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bakup.toml"
    path.write_text(text)
    return str(path)


def test_only_database_url_keeps_the_original_single_folder_layout() -> None:
    settings = Settings.from_env({"DATABASE_URL": URL, "BACKUP_DIR": "/var/backups"})
    [target] = settings.targets
    assert target.name == "app"
    assert target.backup_dir == Path("/var/backups")
    assert target.schedule.cron == "0 2 * * *"
    assert settings.target(None) is target


def test_config_file_targets_get_their_own_folders_and_inherit_what_they_do_not_set(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        """
[[targets]]
name = "shop"
url_env = "SHOP_URL"
schedule = "every 6h"
max_backups = 7

[[targets]]
name = "crm"
url = "postgresql://crm@crm.internal/crm"
compression = "zstd"
""",
    )
    env = {
        "BAKUP_CONFIG": config,
        "SHOP_URL": URL,
        "BACKUP_DIR": "/b",
        "RETENTION_DAYS": "9",
        "BACKUP_SCHEDULE": "0 4 * * *",
    }
    settings = Settings.from_env(env)
    shop, crm = settings.targets
    assert (shop.name, shop.backup_dir, shop.retention.max_backups) == ("shop", Path("/b/shop"), 7)
    assert shop.retention.retention_days == 9
    assert shop.schedule.text == "every 6h"
    assert shop.database is not None and shop.database.password == "s3cret-pw"
    assert (crm.backup_dir, crm.compression, crm.schedule.cron) == (
        Path("/b/crm"),
        "zstd",
        "0 4 * * *",
    )
    assert settings.target("crm") is crm
    with pytest.raises(ConfigError, match="--database"):
        settings.target(None)
    with pytest.raises(ConfigError, match="no database named 'nope'"):
        settings.target("nope")


def test_every_problem_in_a_config_file_is_reported_at_once_without_secrets(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
[[targets]]
name = "ok"
url = "postgresql://u:topsecret@h:99999/db"

[[targets]]
name = "../escape"
url_env = "MISSING_VAR"
compression = "lz4"
keep_daily = "many"
extra = 1

[[targets]]
name = "ok"
url = "postgresql://u@h/db"
""",
    )
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"BAKUP_CONFIG": config})
    problems = raised.value.problems
    joined = "\n".join(problems)
    for phrase in (
        "99999",
        "name must be",
        "MISSING_VAR",
        "lz4",
        "keep_daily",
        "'extra'",
        "used twice",
    ):
        assert phrase in joined, phrase
    assert "topsecret" not in joined
    assert all(config in problem for problem in problems)


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("this is not toml [", "not valid TOML"),
        ("title = 'no targets'", "at least one \\[\\[targets"),
    ],
)
def test_unusable_config_files_are_rejected(tmp_path: Path, text: str, phrase: str) -> None:
    with pytest.raises(ConfigError, match=phrase):
        Settings.from_env({"BAKUP_CONFIG": write_config(tmp_path, text)})


def test_a_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"BAKUP_CONFIG": "/nonexistent/bakup.toml"})


def test_backup_format_defaults_to_single_and_a_target_may_choose_dedup(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """
[[targets]]
name = "shop"
url_env = "SHOP_URL"

[[targets]]
name = "crm"
url_env = "SHOP_URL"
backup_format = "dedup"
""",
    )
    settings = Settings.from_env({"BAKUP_CONFIG": config, "SHOP_URL": URL})
    assert [t.backup_format for t in settings.targets] == ["single", "dedup"]
    inherited = Settings.from_env(
        {"BAKUP_CONFIG": config, "SHOP_URL": URL, "BACKUP_FORMAT": "dedup"}
    )
    assert [t.backup_format for t in inherited.targets] == ["dedup", "dedup"]


def test_an_unknown_backup_format_is_named_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"BACKUP_FORMAT is 'incremental': use one of single, dedup"
    ):
        Settings.from_env({"DATABASE_URL": URL, "BACKUP_FORMAT": "incremental"})
    config = write_config(
        tmp_path, '[[targets]]\nname = "shop"\nurl_env = "SHOP_URL"\nbackup_format = "zip"\n'
    )
    with pytest.raises(ConfigError, match=r"backup_format is 'zip': use one of single, dedup"):
        Settings.from_env({"BAKUP_CONFIG": config, "SHOP_URL": URL})
