"""`bakup config` as an operator runs it: a real process, an environment full of secrets (some
read from files, one database in a BAKUP_CONFIG file), and not one secret in what it prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import base_env, run_bakup
from tests.unit.test_config_report import FORBIDDEN, SECRETS

MORE_SECRETS = ["Smtp-File-Pw-20", "Shop-Env-Pw-21", "Inline-Crm-Pw-22", "Redis-File-Pw-23"]


@pytest.fixture
def env_with_secrets(tmp_path: Path) -> dict[str, str]:
    smtp_file = tmp_path / "smtp_url"
    smtp_file.write_text("smtp://alerts:Smtp-File-Pw-20@mail.example.com:587\n")
    redis_file = tmp_path / "redis_url"
    redis_file.write_text("redis://:Redis-File-Pw-23@redis:6379/0\n")
    config = tmp_path / "targets.toml"
    config.write_text(
        "[[targets]]\n"
        'name = "shop"\n'
        'url_env = "SHOP_DATABASE_URL"\n'
        "keep_weekly = 8\n\n"
        "[[targets]]\n"
        'name = "crm"\n'
        'url = "postgresql://crm:Inline-Crm-Pw-22@crm-db:5432/crm"\n'
        'compression = "zstd"\n'
    )
    env = {name: value for name, value in SECRETS.items() if name not in ("SMTP_URL", "REDIS_URL")}
    return base_env(
        **env,
        SMTP_URL_FILE=str(smtp_file),
        REDIS_URL_FILE=str(redis_file),
        ALERT_EMAIL_FROM="bakup@example.com",
        ALERT_EMAIL_TO="ops@example.com",
        BAKUP_CONFIG=str(config),
        SHOP_DATABASE_URL="postgresql://shop:Shop-Env-Pw-21@shop-db:5432/shop",
        BACKUP_DIR=str(tmp_path / "backups"),
        RETENTION_DAYS="14",
    )


def test_bakup_config_shows_where_each_value_came_from_and_no_secret(
    env_with_secrets: dict[str, str],
) -> None:
    result = run_bakup("config", env=env_with_secrets)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [secret for secret in FORBIDDEN + MORE_SECRETS if secret in output] == []
    assert "RETENTION_DAYS" in output and "14  (environment)" in output
    assert "smtp://alerts:***@mail.example.com:587" in output
    assert "from SMTP_URL_FILE" in output
    assert "shop: shop@shop-db:5432/shop from SHOP_DATABASE_URL" in output
    assert "keep_weekly: 8 (BAKUP_CONFIG)" in output
    assert "retention_days: 14 (environment)" in output
    assert "compression: zstd (BAKUP_CONFIG)" in output


def test_bakup_config_json_names_every_variable_and_no_secret(
    env_with_secrets: dict[str, str],
) -> None:
    result = run_bakup("config", "--json", env=env_with_secrets)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [secret for secret in FORBIDDEN + MORE_SECRETS if secret in output] == []
    document = json.loads(result.stdout)
    by_name = {entry["name"]: entry for entry in document["variables"]}
    assert by_name["WEBHOOK_SECRET"] == {**by_name["WEBHOOK_SECRET"], "value": "***"}
    assert by_name["REDIS_URL"]["value"] == "redis://:***@redis:6379/0"
    assert [target["name"] for target in document["databases"]] == ["shop", "crm"]


def test_bakup_config_still_shows_an_invalid_configuration_and_exits_2(tmp_path: Path) -> None:
    env = base_env(
        DATABASE_URL="postgresql://u:Bad-Port-Pw-24@db:abc/app",
        MAX_BACKUPS="many",
        BACKUP_DIR=str(tmp_path),
    )
    result = run_bakup("config", env=env)
    assert result.returncode == 2
    assert "MAX_BACKUPS is 'many'" in result.stdout
    assert "Bad-Port-Pw-24" not in result.stdout + result.stderr


def test_bakup_help_points_at_bakup_config() -> None:
    result = run_bakup("--help", env=base_env())
    assert result.returncode == 0
    assert "bakup config" in " ".join(result.stdout.split())
    assert any(line.split()[:1] == ["config"] for line in result.stdout.splitlines())
