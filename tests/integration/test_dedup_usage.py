"""What deduplicated backups take, as operators see it: `bakup list`'s new and logical bytes,
the stored-bytes and deduplication-ratio metrics (after a prune and restored at start-up), and
the weekly summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bakup.logs import megabytes
from tests.conftest import Database, base_env, run_bakup
from tests.integration.test_metrics_one_shot import samples

pytestmark = pytest.mark.integration


def chunk_bytes(backup_dir: Path) -> int:
    return sum(p.stat().st_size for p in (backup_dir / "chunks").iterdir() if len(p.name) == 64)


def test_list_metrics_and_summary_show_new_bytes_storage_used_and_the_ratio(
    big_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=big_db.url,
        BACKUP_DIR=str(backup_dir),
        BACKUP_FORMAT="dedup",
        METRICS_TEXTFILE=str(textfile),
    )
    for day in range(3):
        big_db.psql(
            f"INSERT INTO sales.customers (name) SELECT 'day {day} ' || g "
            "FROM generate_series(1, 200) g"
        )
        made = run_bakup("backup", env=env)
        assert made.returncode == 0, made.stderr

    items = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert len(items) == 3
    for item in items:
        assert item["new_bytes"] == item["dedup"]["new_bytes"] + item["size_bytes"]
        assert item["logical_bytes"] == item["raw_size_bytes"] > item["new_bytes"]
    assert items[1]["new_bytes"] < items[0]["new_bytes"] * 0.2

    table = run_bakup("list", env=env).stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "DATABASE", "CREATED", "(UTC)", "NEW", "LOGICAL"]
    for item, row in zip(items, table[1:], strict=True):
        assert f"{megabytes(item['new_bytes'])}  {megabytes(item['logical_bytes'])}" in row

    # The prune after the last backup measured the chunk store it had just listed.
    stored = sum(item["size_bytes"] for item in items) + chunk_bytes(backup_dir)
    apart = sum(item["size_bytes"] + item["dedup"]["referenced_bytes"] for item in items)
    label = f'{{database="{big_db.name}"}}'
    after_backup = samples(textfile.read_text())
    assert after_backup[f"bakup_backup_stored_bytes{label}"] == stored
    assert after_backup[f"bakup_dedup_ratio{label}"] == pytest.approx(apart / stored)
    assert 2.5 < apart / stored < 3  # three backups in little more than the space of one

    # A run that does not prune (a verification) restores both from storage at start-up.
    assert run_bakup("verify", env=env).returncode == 0
    restored = samples(textfile.read_text())
    assert restored[f"bakup_backup_stored_bytes{label}"] == stored
    assert restored[f"bakup_dedup_ratio{label}"] == pytest.approx(apart / stored)

    summary = run_bakup("summary", env=env)
    assert summary.returncode == 0, summary.stderr
    assert f"storage used:            {megabytes(stored)} in 3 backups" in summary.stdout
    assert (
        f"deduplication ratio:     {apart / stored:.1f}x ({megabytes(apart)} if stored apart)"
        in summary.stdout
    )


def test_single_file_backups_count_their_size_and_a_ratio_of_one(
    small_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir), METRICS_TEXTFILE=str(textfile)
    )
    for _ in range(2):
        assert run_bakup("backup", env=env).returncode == 0
    items = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert [item["new_bytes"] for item in items] == [item["size_bytes"] for item in items]
    assert [item["logical_bytes"] for item in items] == [item["raw_size_bytes"] for item in items]
    label = f'{{database="{small_db.name}"}}'
    figures = samples(textfile.read_text())
    assert figures[f"bakup_backup_stored_bytes{label}"] == sum(i["size_bytes"] for i in items)
    assert figures[f"bakup_dedup_ratio{label}"] == 1
    summary = run_bakup("summary", env=env).stdout
    assert "deduplication ratio:     1.0x (no deduplicated backups)" in summary
