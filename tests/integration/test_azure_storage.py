"""Backups in Azure Blob Storage (Azurite): the whole cycle through the same code path as S3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.storage_cycle import full_cycle
from tests.support import azurite
from tests.support.azurite import KEY, Azurite

pytestmark = pytest.mark.integration


@pytest.fixture
def azure() -> Iterator[Azurite]:
    server = azurite.start()
    server.create_container("backups")
    yield server
    server.stop()


def test_backup_list_verify_restore_and_prune_in_azure_blob_storage(
    small_db: Database, target_database: Database, azure: Azurite
) -> None:
    env = base_env(
        DATABASE_URL=small_db.url,
        STORAGE_URL="az://backups/prod",
        MAX_BACKUPS="1",
        TARGET_DATABASE_URL=target_database.url,
        COMPRESSION="zstd",
        **azure.env(),
    )
    _, runs = full_cycle(env, target_database, suffix=".sql.zst")
    assert not any(KEY in run.stdout + run.stderr for run in runs)


def test_a_missing_container_is_one_clear_line(small_db: Database, azure: Azurite) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="az://nothere/x", **azure.env())
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bakup: az://nothere/x: the bucket does not exist: create it or fix STORAGE_URL"
    ]
