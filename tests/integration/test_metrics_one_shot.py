"""A one-shot `bakup backup` (cron, by hand) publishes its metrics: node_exporter textfile, or
a real Pushgateway."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.support.postgres_server import free_port

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith("bakup_"):
            series, _, value = line.rpartition(" ")
            found[series] = float(value)
    return found


def test_textfile_holds_the_runs_figures_and_the_failures_stage(
    small_db: Database, tmp_path: Path
) -> None:
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"), METRICS_TEXTFILE=str(textfile)
    )
    assert run_bakup("backup", env=env).returncode == 0
    good = samples(textfile.read_text())
    label = f'database="{small_db.name}"'
    assert good[f"bakup_backup_last_success_timestamp_seconds{{{label}}}"] > time.time() - 60
    assert good[f'bakup_backups_total{{{label},outcome="success"}}'] == 1
    assert good[f"bakup_stored_backups{{{label}}}"] == 1

    broken = {**env, "DATABASE_URL": small_db.server.url(small_db.name, password="wrong")}
    assert run_bakup("backup", env=broken).returncode == 1
    failed = samples(textfile.read_text())
    assert failed[f'bakup_backup_failures_total{{{label},stage="connect"}}'] == 1
    # The last success is restored from the manifests, not lost with the failed run.
    assert failed[f"bakup_backup_last_success_timestamp_seconds{{{label}}}"] == pytest.approx(
        good[f"bakup_backup_last_success_timestamp_seconds{{{label}}}"], abs=1
    )
    assert small_db.server.password not in textfile.read_text()


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway missing: run scripts/install-system-packages")
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/-/ready", timeout=1)
            break
        except OSError:
            assert time.monotonic() < deadline, "the Pushgateway did not start"
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def test_a_run_pushes_to_the_pushgateway(
    small_db: Database, tmp_path: Path, pushgateway: str
) -> None:
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"), PUSHGATEWAY_URL=pushgateway
    )
    assert run_bakup("backup", env=env).returncode == 0
    with urllib.request.urlopen(pushgateway + "/metrics", timeout=5) as response:
        text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("bakup_backups_total")]
    assert any(
        f'database="{small_db.name}"' in line
        and 'outcome="success"' in line
        and line.endswith(" 1")
        for line in lines
    ), lines
    assert 'job="bakup"' in text


def test_an_unreachable_pushgateway_does_not_fail_the_backup(
    small_db: Database, tmp_path: Path
) -> None:
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        PUSHGATEWAY_URL=f"http://127.0.0.1:{free_port()}",
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    assert "could not push metrics" in result.stdout
