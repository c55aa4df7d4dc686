"""The worker as deployed for production: `bakup worker --beat` with metrics on and backups in
an object store (S3, GCS, Azure emulators). The main process forks its pool after start-up, so
nothing it does before then may start a storage client's threads."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database
from tests.end_to_end.conftest import Services, wait_for, worker_env
from tests.support import azurite, gcs_server, s3_server
from tests.support.postgres_server import free_port

pytestmark = pytest.mark.end_to_end


@pytest.fixture(params=["s3", "gs", "az"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An object store emulator with the bucket ``backups``: its URL scheme and environment."""
    if request.param == "s3":
        server = s3_server.start()
        server.create_bucket("backups")
    elif request.param == "gs":
        server = gcs_server.start(tmp_path)
        server.create_bucket("backups")
    else:
        server = azurite.start()
        server.create_container("backups")
    yield request.param, server.env()
    server.stop()


def scraped(port: int, name: str) -> float:
    """The value of the metric ``name`` (one series) on the worker's /metrics; 0 if absent or
    not served yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rpartition(" ")[2])
    return 0.0


def test_the_worker_backs_up_to_an_object_store_with_metrics_on_and_restores_its_gauges(
    small_db: Database,
    tmp_path: Path,
    redis_url: str,
    services: Services,
    store: tuple[str, dict[str, str]],
) -> None:
    scheme, store_env = store
    port = free_port()
    env = worker_env(
        small_db,
        tmp_path / "unused",
        redis_url,
        STORAGE_URL=f"{scheme}://backups/prod",
        BACKUP_SCHEDULE="every 3s",
        METRICS_PORT=str(port),
        **store_env,
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    wait_for(lambda: worker.count("Backup verified successfully") >= 2, 90, "two backups")
    wait_for(
        lambda: scraped(port, "bakup_backup_last_success_timestamp_seconds") > 0, 30, "metrics"
    )
    assert worker.stop() == 0

    # Restarted: the gauges come back from the stored manifests, read by a pool child.
    again = services.start(
        "worker", "--concurrency", "1", env={**env, "BACKUP_SCHEDULE": "disable"}
    )
    wait_for(
        lambda: scraped(port, "bakup_stored_backups") >= 2, 60, "gauges restored from the store"
    )
    assert again.stop() == 0
    output = worker.output() + again.output()
    assert "Traceback" not in output
