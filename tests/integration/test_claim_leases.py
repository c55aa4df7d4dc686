"""A backup's claim lease on a local folder, with real processes: under a lease of seconds,
renewed many times a backup, every backup still ends complete (its first expiry is not cut
short, and no renewal follows the complete record); a run frozen past its lease fails instead
of recording a backup that another machine may already have swept. Leases are cut to seconds
with BAKUP_LEASE_SECONDS."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup, start_bakup, wait_for
from tests.integration.faults import data_partials, pausing_pg_bin

pytestmark = pytest.mark.integration


def statuses(folder: Path) -> list[str]:
    return [json.loads(p.read_text())["status"] for p in sorted(folder.glob("postgres_*.json"))]


def test_backups_under_a_four_second_lease_renewed_as_they_run_all_end_complete(
    small_db: Database, tmp_path: Path
) -> None:
    folder = tmp_path / "b"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(folder),
        MAX_BACKUPS="100",
        BAKUP_LEASE_SECONDS="4",  # a renewal every 0.4 s
    )
    for _ in range(8):
        made = run_bakup("backup", env=env)
        assert made.returncode == 0, made.stdout + made.stderr
        time.sleep(1.0)  # the next backup gets the next second's name
    assert statuses(folder) == ["complete"] * 8


def test_a_run_frozen_past_its_lease_fails_and_keeps_nothing(
    big_db: Database, tmp_path: Path
) -> None:
    folder = tmp_path / "b"
    env = base_env(
        DATABASE_URL=big_db.url,
        BACKUP_DIR=str(folder),
        COMPRESSION="none",
        BAKUP_LEASE_SECONDS="4",  # lost once frozen for over 2 s
    )
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=2_000_000, pause_seconds=3)
    run = start_bakup("backup", env={**env, "PG_BIN_DIR": str(slow)})
    wait_for(lambda: bool(data_partials(folder)) or run.poll() is not None, "the backup's data")
    assert run.poll() is None, "the backup ended before it could be frozen"
    # Frozen (a stopped process, a paused VM) for longer than half the lease: no renewal.
    run.send_signal(signal.SIGSTOP)
    time.sleep(5)
    run.send_signal(signal.SIGCONT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1, out + err
    [line] = err.strip().splitlines()
    assert "could not be renewed" in line, line
    assert "ERROR: Failed to create backup" in out
    assert list(folder.glob("postgres_backup_*")) == []  # no backup, no claim
    assert not data_partials(folder)
    again = run_bakup("backup", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(folder) == ["complete"]
