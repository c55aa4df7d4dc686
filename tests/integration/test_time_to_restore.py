"""Time to restore as a first-class figure: every test restore records its duration in the
manifest, the metrics export it (and keep it across runs, read back from the manifests), and
the weekly summary states it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.test_metrics_one_shot import samples

pytestmark = pytest.mark.integration


def manifests(backup_dir: Path) -> list[dict[str, object]]:
    return [json.loads(path.read_text()) for path in sorted(backup_dir.glob("*.json"))]


def test_a_test_restore_records_its_duration_in_the_manifest_metrics_and_summary(
    small_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir), METRICS_TEXTFILE=str(textfile)
    )
    series = f'bakup_restore_test_duration_seconds{{database="{small_db.name}"}}'
    assert run_bakup("backup", env=env).returncode == 0
    assert series not in samples(textfile.read_text())  # never measured: no series, not a 0

    summary = run_bakup("summary", env=env)
    assert summary.returncode == 0, summary.stderr
    assert "time to restore:         not measured" in summary.stdout

    integrity = run_bakup("verify", env=env)
    assert integrity.returncode == 0, integrity.stderr
    [record] = manifests(backup_dir)
    assert "restore_duration_seconds" not in record["verification"]  # type: ignore[operator]

    run = run_bakup("verify", "--restore", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    [record] = manifests(backup_dir)
    verification = record["verification"]
    assert isinstance(verification, dict) and verification["level"] == "restore"
    seconds = verification["restore_duration_seconds"]
    assert 0 < seconds <= verification["duration_seconds"]
    assert "Time to restore postgres_backup_" in run.stdout
    assert samples(textfile.read_text())[series] == pytest.approx(seconds, abs=0.001)

    # A later run (a new process, as after a worker restart) reads the figure back from the
    # manifest rather than losing it.
    assert run_bakup("backup", env=env).returncode == 0
    assert samples(textfile.read_text())[series] == pytest.approx(seconds, abs=0.001)

    summary = run_bakup("summary", env=env)
    assert summary.returncode == 0, summary.stderr
    line = next(line for line in summary.stdout.splitlines() if "time to restore:" in line)
    assert f"{seconds:.1f} s (test restore of {record['name']}, " in line, line
