"""Failures reported as what they are, against the real server: the stage that failed, whether
a retry may help, and advice naming the variable the user actually set."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from tests.conftest import REPO, Database, base_env
from tests.integration.test_faults import assert_one_line_error

pytestmark = pytest.mark.integration


def run_limited(
    *args: str, env: dict[str, str], file_size_limit: int
) -> subprocess.CompletedProcess[str]:
    """Run ``bakup`` with a limit on the size of any file it writes (writes past it fail
    with EFBIG, a real storage error)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "bakup.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        preexec_fn=limit,
    )


def failure_stages(textfile: Path) -> dict[str, float]:
    """stage -> count of the non-zero bakup_backup_failures_total series in a textfile."""
    found = {}
    for line in textfile.read_text().splitlines():
        if line.startswith("bakup_backup_failures_total{"):
            series, _, value = line.rpartition(" ")
            if float(value):
                found[series.split('stage="')[1].split('"')[0]] = float(value)
    return found


def test_a_storage_error_under_encryption_is_reported_as_a_storage_error(
    small_db: Database, tmp_path: Path
) -> None:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    backup_dir = tmp_path / "b"
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(backup_dir),
        COMPRESSION="none",
        ENCRYPTION_RECIPIENTS=recipient,
        METRICS_TEXTFILE=str(textfile),
    )
    result = run_limited("backup", env=env, file_size_limit=32 * 1024)
    assert_one_line_error(result, 1, "File too large", str(backup_dir))
    assert "encryption" not in result.stderr.lower()
    assert failure_stages(textfile) == {"store": 1}
    assert [path.name for path in backup_dir.iterdir() if not path.name.startswith(".")] == []
