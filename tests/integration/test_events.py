"""Actions emit events for metrics and notifications; a failing listener never changes the
outcome of a backup."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bakup import events
from bakup.actions import run_backup
from bakup.errors import BakupError
from bakup.settings import Settings
from tests.conftest import Database

pytestmark = pytest.mark.integration


@pytest.fixture
def received() -> Iterator[list[events.Event]]:
    got: list[events.Event] = []
    unsubscribe = events.subscribe(got.append)
    yield got
    unsubscribe()


def test_successful_backup_emits_started_succeeded_and_prune_finished(
    database: Database, tmp_path: Path, received: list[events.Event]
) -> None:
    database.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g")
    settings = Settings.from_env({"DATABASE_URL": database.url, "BACKUP_DIR": str(tmp_path)})
    outcome = run_backup(settings, settings.targets[0])

    assert [event.kind for event in received] == [
        events.BACKUP_STARTED,
        events.BACKUP_SUCCEEDED,
        events.PRUNE_FINISHED,
    ]
    assert {event.database for event in received} == {database.name}
    succeeded = received[1].details
    assert succeeded["name"] == outcome.backup.name
    assert succeeded["size_bytes"] == outcome.backup.size_bytes > 0
    assert received[2].details["stored_backups"] == 1


def test_failed_backup_emits_failure_with_stage_and_redacted_error(
    database: Database, tmp_path: Path, received: list[events.Event]
) -> None:
    url = database.server.url("no_such_database")
    settings = Settings.from_env({"DATABASE_URL": url, "BACKUP_DIR": str(tmp_path)})
    with pytest.raises(BakupError):
        run_backup(settings, settings.targets[0])

    assert [event.kind for event in received] == [events.BACKUP_STARTED, events.BACKUP_FAILED]
    failed = received[1]
    assert failed.stage == "connect"
    assert failed.error and "no_such_database" in failed.error
    assert database.server.password not in failed.error


def test_a_listener_that_raises_does_not_fail_the_backup(
    database: Database, tmp_path: Path, received: list[events.Event]
) -> None:
    def broken(event: events.Event) -> None:
        raise RuntimeError("metrics endpoint down")

    unsubscribe = events.subscribe(broken)
    try:
        settings = Settings.from_env({"DATABASE_URL": database.url, "BACKUP_DIR": str(tmp_path)})
        outcome = run_backup(settings, settings.targets[0])
    finally:
        unsubscribe()
    assert outcome.prune_error is None
    assert (tmp_path / f"{outcome.backup.name}.json").exists()
    assert events.BACKUP_SUCCEEDED in [event.kind for event in received]
