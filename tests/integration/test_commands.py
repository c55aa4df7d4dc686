"""`bakup list`, `prune` and `check` against real backups and a real server."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.support.postgres_server import free_port

pytestmark = pytest.mark.integration

LIST_FIELDS = {
    "name",
    "database",
    "created_at",
    "size_bytes",
    "raw_size_bytes",
    "sha256",
    "compression",
    "verified",
    "verified_at",
}


@pytest.fixture
def backup_dir_with_history(database: Database, tmp_path: Path) -> Path:
    """One real backup, copied under older names as if taken daily for the last 45 days."""
    database.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
    backup_dir = tmp_path / "backups"
    result = run_bakup(
        "backup", env=base_env(DATABASE_URL=database.url, BACKUP_DIR=str(backup_dir))
    )
    assert result.returncode == 0, result.stderr
    [manifest_path] = backup_dir.glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    data = (backup_dir / manifest["name"]).read_bytes()
    now = datetime.now(UTC).replace(microsecond=0)
    for days in range(1, 46):
        created = now - timedelta(days=days)
        name = created.strftime("postgres_backup_%Y%m%d_%H%M%S.sql.gz")
        (backup_dir / name).write_bytes(data)
        old = {**manifest, "name": name, "created_at": created.isoformat().replace("+00:00", "Z")}
        (backup_dir / f"{name}.json").write_text(json.dumps(old))
    return backup_dir


def test_list_json_prints_every_complete_backup_with_the_contract_fields(
    backup_dir_with_history: Path,
) -> None:
    result = run_bakup("list", "--json", env=base_env(BACKUP_DIR=str(backup_dir_with_history)))
    assert result.returncode == 0
    items = json.loads(result.stdout)
    assert len(items) == 46
    for item in items:
        assert set(item) >= LIST_FIELDS
        assert item["created_at"].endswith("Z")
    assert [item["created_at"] for item in items] == sorted(item["created_at"] for item in items)


def test_list_prints_a_table_for_people(backup_dir_with_history: Path) -> None:
    result = run_bakup("list", env=base_env(BACKUP_DIR=str(backup_dir_with_history)))
    assert result.returncode == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["NAME", "DATABASE", "CREATED"]
    assert len(lines) == 47


def test_prune_dry_run_deletes_nothing_and_prune_applies_the_original_limits(
    backup_dir_with_history: Path,
) -> None:
    env = base_env(BACKUP_DIR=str(backup_dir_with_history))
    before = sorted(os.listdir(backup_dir_with_history))
    dry = run_bakup("prune", "--dry-run", env=env)
    assert dry.returncode == 0
    assert dry.stdout.count("Would delete") == 16
    assert sorted(os.listdir(backup_dir_with_history)) == before

    result = run_bakup("prune", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Deleted postgres_backup_") == 16
    assert "Total backups: 30" in result.stdout
    assert len(json.loads(run_bakup("list", "--json", env=env).stdout)) == 30


def test_prune_keeps_monthly_backups_when_asked(backup_dir_with_history: Path) -> None:
    env = base_env(
        BACKUP_DIR=str(backup_dir_with_history),
        MAX_BACKUPS="7",
        RETENTION_DAYS="7",
        KEEP_MONTHLY="3",
    )
    assert run_bakup("prune", env=env).returncode == 0
    items = json.loads(run_bakup("list", "--json", env=env).stdout)
    months = {item["created_at"][:7] for item in items}
    assert 8 <= len(items) <= 10
    assert len(months) >= 2


def test_prune_never_deletes_the_newest_backup_however_old(backup_dir_with_history: Path) -> None:
    # Backups have failed for ten days: the newest complete one is ten days old.
    env = base_env(BACKUP_DIR=str(backup_dir_with_history), MAX_BACKUPS="0", RETENTION_DAYS="5")
    items = json.loads(run_bakup("list", "--json", env=env).stdout)
    for item in items[-10:]:
        (backup_dir_with_history / f"{item['name']}.json").unlink()
        (backup_dir_with_history / item["name"]).unlink()
    newest = items[-11]["name"]

    result = run_bakup("prune", env=env)
    assert result.returncode == 0, result.stderr
    remaining = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert [item["name"] for item in remaining] == [newest]


def test_check_reports_each_check_on_its_own_line(database: Database, tmp_path: Path) -> None:
    env = base_env(DATABASE_URL=database.url, BACKUP_DIR=str(tmp_path / "b"))
    result = run_bakup("check", env=env)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 4
    assert [line.split(":")[0].split(None, 1)[1] for line in lines] == [
        "config",
        "database",
        "pg_dump",
        "backup directory",
    ]


def test_check_fails_with_advice_when_the_database_is_unreachable(
    database: Database, tmp_path: Path
) -> None:
    url = database.url.replace(f":{database.server.port}/", f":{free_port()}/")
    result = run_bakup("check", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "b")))
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "database" in failed[0] and "DATABASE_URL" in failed[0]


def test_check_exits_2_for_bad_configuration(tmp_path: Path) -> None:
    result = run_bakup("check", env=base_env(DATABASE_URL="postgresql://h:1/x", MAX_BACKUPS="many"))
    assert result.returncode == 2
    assert "MAX_BACKUPS" in result.stdout


def test_check_fails_when_pg_dump_is_older_than_the_server(
    database: Database, tmp_path: Path
) -> None:
    old_bin = tmp_path / "old-bin"
    old_bin.mkdir()
    fake = old_bin / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    env = base_env(
        DATABASE_URL=database.url, BACKUP_DIR=str(tmp_path / "b"), PG_BIN_DIR=str(old_bin)
    )
    result = run_bakup("check", env=env)
    assert result.returncode == 1
    [failed] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "pg_dump" in failed and "version 9" in failed and "PG_BIN_DIR" in failed
