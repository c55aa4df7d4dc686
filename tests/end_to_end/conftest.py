"""Real Redis, real Celery worker and beat processes, started as they are deployed."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from celery import Celery

from tests.conftest import REPO, Database, base_env
from tests.support import redis_server
from tests.support.redis_server import RedisServer

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    server = redis_server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis: RedisServer) -> str:
    """A Redis database of its own for each test (no state shared between tests)."""
    return redis.url(next(_databases) % 64)


@dataclass
class Service:
    """A running `bakup worker` or `bakup beat` process and its log file."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, text: str) -> int:
        return self.output().count(text)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (warm shutdown), then SIGKILL the group if it lingers; returns the status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the process and its children, as a crash or the OOM killer would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@dataclass
class Services:
    """Starts services for one test and stops whatever is left at its end."""

    tmp_path: Path
    started: list[Service] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str], cwd: Path = REPO) -> Service:
        log = self.tmp_path / f"service-{len(self.started)}-{args[0]}.log"
        handle = log.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "bakup.cli", *args],
            env=env,
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        service = Service(process, log)
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        for service in self.started:
            service.stop(timeout=30)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    running = Services(tmp_path)
    yield running
    running.stop_all()


def worker_env(
    database: Database, backup_dir: Path, redis_url: str, **extra: str
) -> dict[str, str]:
    """The environment of a worker for ``database``, quick to react for tests."""
    settings = {
        "DATABASE_URL": database.url,
        "BACKUP_DIR": str(backup_dir),
        "REDIS_URL": redis_url,
        "BEAT_SCHEDULE_FILE": str(backup_dir.parent / "beat-schedule"),
        "BACKUP_SCHEDULE": "disable",
        "CATCH_UP_INTERVAL": "2",
        "LOCK_TTL": "3",
        "RETRY_BASE_SECONDS": "1",
        "RETRY_MAX_SECONDS": "2",
        "VERIFY_LEVEL": "integrity",
        "METRICS_PORT": "0",
    }
    return base_env(**{**settings, **extra})


def send_backup(redis_url: str, target: str, **kwargs: object) -> None:
    """Queue a backup task the way beat does, from outside the worker."""
    client = Celery(broker=redis_url)
    client.send_task("bakup.backup", args=[target], kwargs=kwargs, queue="bakup")


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def complete_backups(backup_dir: Path) -> list[dict]:
    """The manifests of complete backups in ``backup_dir``, oldest first (claims of runs in
    progress, or of runs that died, are not backups)."""
    manifests = (json.loads(path.read_text()) for path in backup_dir.glob("postgres_backup_*.json"))
    return sorted(
        (manifest for manifest in manifests if manifest.get("status") == "complete"),
        key=lambda manifest: manifest["created_at"],
    )
