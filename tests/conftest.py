"""Fixtures shared by the integration and end-to-end tests: a real PostgreSQL server started
for the session, fresh databases per test, and a way to run the real ``bakup`` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import postgres_server, s3_server
from tests.support.postgres_server import PostgresServer
from tests.support.receivers import HttpReceiver, SmtpReceiver, start_http, start_smtp
from tests.support.s3_server import S3Server

REPO = Path(__file__).resolve().parent.parent


def _throwaway_server(prefix: str, bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    server = postgres_server.start(base, bin_dir=bin_dir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole test session, stopped at the end."""
    yield from _throwaway_server("bakup-test-pg-")


@pytest.fixture(scope="session")
def second_server() -> Iterator[PostgresServer]:
    """A second, separate cluster (a fresh server elsewhere): roles made on the first are not
    there unless a test creates them (tests use unique role names)."""
    yield from _throwaway_server("bakup-test-pg2-")


@dataclass
class Database:
    """A database created for one test."""

    server: PostgresServer
    name: str

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def psql(self, sql: str) -> str:
        return self.server.psql(self.name, sql)


def create_database(server: PostgresServer, prefix: str = "t") -> Database:
    """Create an empty database with a unique name on ``server``."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server.psql("postgres", f'CREATE DATABASE "{name}"')
    return Database(server, name)


@pytest.fixture
def database(pg_server: PostgresServer) -> Iterator[Database]:
    """An empty database for one test, dropped afterwards."""
    db = create_database(pg_server)
    yield db
    pg_server.psql("postgres", f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


@pytest.fixture
def small_db(database: Database) -> Database:
    """An empty-but-for-one-small-table database for one test."""
    database.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g"
    )
    return database


@pytest.fixture
def big_db(database: Database) -> Database:
    """A database with the sample data: big enough that its dump takes several upload parts."""
    from tests.support.sample_data import load_sample_data

    load_sample_data(database.server, database.name)
    return database


@pytest.fixture
def target_database(pg_server: PostgresServer) -> Iterator[Database]:
    """A second empty database to restore into, dropped afterwards."""
    db = create_database(pg_server, "restore")
    yield db
    pg_server.psql("postgres", f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')


def base_env(**extra: str) -> dict[str, str]:
    """A minimal environment for running bakup: no inherited PG* or bakup variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_bakup(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the real ``bakup`` command line in a child process and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "bakup.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.05)


def start_bakup(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start the real ``bakup`` command line in the background, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "bakup.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    """A local SMTP server collecting what bakup sends."""
    receiver = start_smtp()
    yield receiver
    receiver.stop()


@pytest.fixture
def http() -> Iterator[HttpReceiver]:
    """A local HTTP server standing in for Slack, webhooks and healthchecks."""
    receiver = start_http()
    yield receiver
    receiver.stop()


@pytest.fixture
def s3() -> Iterator[S3Server]:
    """A local S3-compatible server with the bucket ``backups``."""
    server = s3_server.start()
    server.create_bucket("backups")
    yield server
    server.stop()
