"""Nothing left behind: a stopped worker removes its metrics folder and writes no schedule
file into the folder it was started from; a killed worker's metrics folder is removed when the
next worker starts, and a live worker's never is."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakup.lifecycle import Owner
from metrics.exposition import METRICS_DIR_PREFIX, OWNER_FILE
from tests.conftest import Database
from tests.end_to_end.conftest import Service, Services, wait_for, worker_env
from tests.support.postgres_server import free_port

pytestmark = pytest.mark.end_to_end

TEMP = Path(tempfile.gettempdir())


def metrics_folder_of(service: Service) -> Path | None:
    """The ``bakup-metrics-*`` folder whose owner record names the service's process."""
    for owner_file in TEMP.glob(f"{METRICS_DIR_PREFIX}*/{OWNER_FILE}"):
        try:
            if json.loads(owner_file.read_text())["pid"] == service.process.pid:
                return owner_file.parent
        except (OSError, ValueError, KeyError):
            continue
    return None


def start_worker(services: Services, env: dict[str, str], cwd: Path) -> tuple[Service, Path]:
    """A worker with metrics on and its own beat, ready; returns it and its metrics folder."""
    worker = services.start(
        "worker", "--beat", env={**env, "METRICS_PORT": str(free_port())}, cwd=cwd
    )
    wait_for(lambda: "ready" in worker.output(), 60, "the worker to start")
    folder = metrics_folder_of(worker)
    assert folder is not None, "the worker recorded no metrics folder of its own"
    return worker, folder


@pytest.fixture
def leftover_env(small_db: Database, tmp_path: Path, redis_url: str) -> dict[str, str]:
    """A worker's environment with BEAT_SCHEDULE_FILE unset, as an operator would leave it."""
    env = worker_env(small_db, tmp_path / "backups", redis_url)
    del env["BEAT_SCHEDULE_FILE"]
    return env


@pytest.fixture
def started_from(tmp_path: Path) -> Path:
    folder = tmp_path / "cwd"
    folder.mkdir()
    return folder


@pytest.fixture
def foreign_folders() -> Iterator[list[Path]]:
    """Metrics folders that are not a dead worker's; removed by the test at its end."""
    made: list[Path] = []
    yield made
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_stopped_worker_removes_its_metrics_folder_and_writes_no_schedule_file_where_it_started(
    leftover_env: dict[str, str], tmp_path: Path, started_from: Path, services: Services
) -> None:
    worker, folder = start_worker(services, leftover_env, started_from)
    wait_for(
        lambda: list((tmp_path / "backups").glob(".celerybeat-schedule*")),
        30,
        "beat's schedule file beside the backups",
    )

    assert worker.stop() == 0
    assert not folder.exists()
    assert sorted(os.listdir(started_from)) == []
    assert list((tmp_path / "backups").glob(".celerybeat-schedule*"))
    assert "Traceback" not in worker.output()


def test_a_killed_workers_metrics_folder_is_removed_when_the_next_worker_starts(
    leftover_env: dict[str, str],
    started_from: Path,
    services: Services,
    foreign_folders: list[Path],
) -> None:
    killed, killed_folder = start_worker(services, leftover_env, started_from)
    killed.kill()
    assert killed_folder.exists()  # SIGKILL leaves no chance to clean up

    # A folder whose owner lives (this test's process) and one without an owner record:
    # neither is provably a dead worker's, so neither may go.
    alive = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX))
    (alive / OWNER_FILE).write_text(json.dumps(Owner.current().to_json()))
    unrecorded = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX))
    foreign_folders += [alive, unrecorded]

    second, second_folder = start_worker(services, leftover_env, started_from)

    assert not killed_folder.exists()
    assert alive.exists() and unrecorded.exists()
    assert second_folder.exists() and second_folder != killed_folder
    assert second.stop() == 0
    assert not second_folder.exists()
    assert sorted(os.listdir(started_from)) == []
