"""A deduplicated backup whose chunks were damaged in storage: `bakup verify` says which chunk
and fails, the failure is recorded in the manifest, and `restore latest` passes over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.support.sample_data import table_fingerprints

pytestmark = pytest.mark.integration


def chunk_names(backup_dir: Path) -> set[str]:
    return {path.name for path in (backup_dir / "chunks").iterdir() if len(path.name) == 64}


def two_days(database: Database, backup_dir: Path) -> tuple[dict[str, str], set[str]]:
    """Back ``database`` up twice with a change between; returns the environment and the
    chunks only the second backup stored."""
    env = base_env(DATABASE_URL=database.url, BACKUP_DIR=str(backup_dir), BACKUP_FORMAT="dedup")
    first = run_bakup("backup", env=env)
    assert first.returncode == 0, first.stderr
    before = chunk_names(backup_dir)
    database.psql(
        "INSERT INTO sales.customers (name) SELECT 'day two ' || g FROM generate_series(1, 500) g"
    )
    second = run_bakup("backup", env=env)
    assert second.returncode == 0, second.stderr
    new = chunk_names(backup_dir) - before
    assert new, "the second backup stored nothing new"
    return env, new


def latest_manifest(backup_dir: Path) -> dict:
    return json.loads(sorted(backup_dir.glob("postgres_backup_*.json"))[-1].read_text())


def check_recorded_and_skipped(
    env: dict[str, str], backup_dir: Path, target: Database, source: Database, line: str
) -> None:
    """The failure is in the manifest, and `restore latest` restores the older backup."""
    damaged = latest_manifest(backup_dir)
    assert damaged["verified"] is False
    assert damaged["verification"]["error"] in line
    [older, newer] = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert newer["name"] == damaged["name"] and newer["verified"] is False
    listed = run_bakup("list", env=env)
    assert "FAILED" in listed.stdout

    source.psql("DELETE FROM sales.customers WHERE name LIKE 'day two %'")  # the older state
    restored = run_bakup("restore", "latest", env={**env, "TARGET_DATABASE_URL": target.url})
    assert restored.returncode == 0, restored.stderr
    assert f"skipping {damaged['name']}: its verification failed" in restored.stdout
    assert f"Restoring {older['name']}" in restored.stdout
    assert table_fingerprints(target.server, target.name) == table_fingerprints(
        source.server, source.name
    )


def test_verify_fails_in_one_line_when_a_chunk_is_missing(
    big_db: Database, target_database: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env, new = two_days(big_db, backup_dir)
    missing = sorted(new)[0]
    (backup_dir / "chunks" / missing).unlink()

    result = run_bakup("verify", env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    name = latest_manifest(backup_dir)["name"]
    assert line.startswith("bakup: 1 of the "), line
    assert line.endswith(
        f" chunks of {name} are missing from {backup_dir / 'chunks'} (the first: "
        f"{missing[:16]}...): restore from another destination or an older backup"
    ), line
    assert "ERROR: Verification failed" in result.stdout
    check_recorded_and_skipped(env, backup_dir, target_database, big_db, line)


def test_verify_fails_in_one_line_when_a_chunk_is_corrupted(
    big_db: Database, target_database: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env, new = two_days(big_db, backup_dir)
    damaged = backup_dir / "chunks" / sorted(new)[0]
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the compressed chunk
    damaged.write_bytes(bytes(data))

    result = run_bakup("verify", env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("bakup: ") and f"chunk {damaged.name[:16]}... " in line, line
    assert latest_manifest(backup_dir)["name"] in line and "corrupted" in line, line
    check_recorded_and_skipped(env, backup_dir, target_database, big_db, line)
