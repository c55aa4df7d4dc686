"""A backup's claim lease on a local folder, with real processes: a run frozen past its lease
(SIGSTOP, as a paused VM or container would be) fails instead of recording a backup that another
machine may already have swept, keeps nothing, and the next run succeeds. The lease is cut to
seconds with BAKUP_LEASE_SECONDS."""

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


def test_a_run_frozen_past_its_lease_fails_and_keeps_nothing(
    big_db: Database, tmp_path: Path
) -> None:
    folder = tmp_path / "b"
    env = base_env(
        DATABASE_URL=big_db.url,
        BACKUP_DIR=str(folder),
        COMPRESSION="none",
    )
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=2_000_000, pause_seconds=3)
    # A 4-second lease, lost once frozen for over 2 s; the run after it keeps the default.
    run = start_bakup("backup", env={**env, "PG_BIN_DIR": str(slow), "BAKUP_LEASE_SECONDS": "4"})
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
