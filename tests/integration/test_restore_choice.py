"""`bakup restore latest` restores the newest backup that did not fail verification."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup

pytestmark = pytest.mark.integration


def test_restore_latest_skips_a_backup_whose_verification_failed(
    small_db: Database, target_database: Database, tmp_path: Path
) -> None:
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        TARGET_DATABASE_URL=target_database.url,
    )
    assert run_bakup("backup", env=env).returncode == 0
    small_db.psql("INSERT INTO t SELECT g, 'newer' FROM generate_series(1, 500) g")
    time.sleep(1.1)  # one-second names: the second backup gets its own
    assert run_bakup("backup", env=env).returncode == 0
    older, newer = sorted((tmp_path / "b").glob("postgres_backup_*.json"))
    record = json.loads(newer.read_text())
    record.update(verified=False, verification={"error": "row counts differ"})
    newer.write_text(json.dumps(record))
    older_name = json.loads(older.read_text())["name"]

    result = run_bakup("restore", "latest", env=env)
    assert result.returncode == 0, result.stderr
    assert f"skipping {record['name']}: its verification failed (row counts differ)" in (
        result.stdout
    )
    assert f"Restoring {older_name} (newest backup that did not fail verification)" in (
        result.stdout
    )
    assert target_database.psql("SELECT count(*) FROM t") == "3000"
