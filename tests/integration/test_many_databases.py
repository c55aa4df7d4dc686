"""Several databases from a BAKUP_CONFIG file: each its own folder, schedule and policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, create_database, run_bakup

pytestmark = pytest.mark.integration


def test_each_configured_database_is_backed_up_into_its_own_folder(
    database: Database, pg_server, tmp_path: Path
) -> None:
    other = create_database(pg_server, "other")
    database.psql("CREATE TABLE a AS SELECT g FROM generate_series(1, 10) g")
    other.psql("CREATE TABLE b AS SELECT g FROM generate_series(1, 20) g")
    config = tmp_path / "bakup.toml"
    config.write_text(
        """
[[targets]]
name = "shop"
url_env = "SHOP_DATABASE_URL"

[[targets]]
name = "crm"
url_env = "CRM_DATABASE_URL"
compression = "zstd"
max_backups = 1
"""
    )
    env = base_env(
        BAKUP_CONFIG=str(config),
        BACKUP_DIR=str(tmp_path / "backups"),
        SHOP_DATABASE_URL=database.url,
        CRM_DATABASE_URL=other.url,
    )
    assert run_bakup("backup", env=env).returncode == 0
    result = run_bakup("backup", "--database", "crm", env=env)
    assert result.returncode == 0, result.stderr

    shop = list((tmp_path / "backups" / "shop").glob("*.sql.gz.json"))
    crm = list((tmp_path / "backups" / "crm").glob("*.sql.zst.json"))
    assert len(shop) == 1 and len(crm) == 1  # crm keeps one backup
    listing = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert sorted(item["target"] for item in listing) == ["crm", "shop"]
    counts = {item["target"]: item["tables"] for item in listing}
    assert counts == {"shop": 1, "crm": 1}

    refused = run_bakup("verify", env=env)
    assert refused.returncode == 2 and "--database" in refused.stderr
    assert run_bakup("verify", "--database", "crm", env=env).returncode == 0
    pg_server.psql("postgres", f'DROP DATABASE "{other.name}" WITH (FORCE)')


def test_a_broken_config_file_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "bakup.toml"
    config.write_text(
        """
[[targets]]
name = "bad name!"
url = "postgresql://u:pw@h:abc/db"
schedule = "every day"
retention_days = -1
colour = "blue"
"""
    )
    result = run_bakup("list", env=base_env(BAKUP_CONFIG=str(config)))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    for expected in ("name", "invalid port", "schedule", "retention_days", "colour"):
        assert any(expected in line for line in lines), (expected, lines)
    assert "pw@" not in result.stderr
