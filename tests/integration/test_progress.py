"""Progress of real runs on a real server: a backup whose pg_dump stalls half way shows plain
progress lines in its (non-terminal) stderr, with the table being dumped and the share of the
previous backup's size, never a secret, and nothing on stdout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import pausing_pg_bin
from tests.integration.test_secrets import secret_forms
from tests.support.postgres_server import find_server_bin

pytestmark = pytest.mark.integration

PROGRESS_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] Backing up \S+: .* in \d+:\d\d ")


def test_a_stalled_backup_logs_progress_lines_on_stderr_without_secrets(
    database: Database, tmp_path: Path
) -> None:
    database.psql(
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g"
    )
    env = base_env(DATABASE_URL=database.url, BACKUP_DIR=str(tmp_path / "backups"))
    first = run_bakup("backup", env=env)
    assert first.returncode == 0, first.stderr
    # A backup that ends before the first interval (30 s by default) prints no progress.
    assert "Backing up" not in first.stdout + first.stderr

    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=200_000, pause_seconds=3)
    run = run_bakup("backup", env={**env, "PG_BIN_DIR": str(slow), "PROGRESS_INTERVAL": "0.3"})
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if "Backing up" in line]
    assert len(lines) >= 3, run.stderr
    assert all(PROGRESS_LINE.match(line) for line in lines), lines
    # Paused inside the table's data: the table, and the share of the first backup's size.
    paused = [line for line in lines if "table public.orders" in line]
    assert len(paused) >= 2, lines
    # While paused the share and the time left show (a line once the dump has run past the
    # previous size has no share left to give).
    assert sum("% of ~" in line and "left" in line for line in paused) >= 2, paused
    assert "Backing up" not in run.stdout  # stdout is the log's and --json's, not progress's
    assert "Backup completed successfully" in run.stdout
    for text in (run.stdout, run.stderr):
        for secret in [*secret_forms(database.server.password), "postgresql://"]:
            assert secret not in text


def test_a_stalled_integrity_check_logs_progress_lines(database: Database, tmp_path: Path) -> None:
    database.psql(
        "CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g"
    )
    env = base_env(DATABASE_URL=database.url, BACKUP_DIR=str(tmp_path / "backups"))
    assert run_bakup("backup", env=env).returncode == 0
    # A pg_restore --list slow to start reading: the read-back stalls once the pipe is full.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    (bin_dir / "pg_restore").write_text(
        f'#!/bin/bash\nsleep 1.2\nexec {find_server_bin()}/pg_restore "$@"\n'
    )
    (bin_dir / "pg_restore").chmod(0o755)
    run = run_bakup("verify", env={**env, "PG_BIN_DIR": str(bin_dir), "PROGRESS_INTERVAL": "0.3"})
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stderr.splitlines() if "Reading back postgres_backup_" in line]
    assert lines, run.stderr
    assert all(
        re.match(r"^\[[-\d: ]+\] Reading back \S+: [\d.]+ [KM]B in ", line) for line in lines
    )
    assert "Reading back" not in run.stdout
