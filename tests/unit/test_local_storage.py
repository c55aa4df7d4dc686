"""Local storage: atomic writes, private permissions, and cleaning only what is abandoned."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from bakup.errors import StorageError
from bakup.storage.local import ABANDONED_AFTER_SECONDS, LocalStorage

NAME = "postgres_backup_20251204_141855.sql.gz"


def age(path: Path, seconds: float = 3600) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    local = LocalStorage(tmp_path / "backups")
    local.prepare()
    return local


def test_the_directory_is_private_and_files_are_0600(storage: LocalStorage) -> None:
    assert stat.S_IMODE(storage.directory.stat().st_mode) == 0o700
    writer = storage.open_writer(NAME)
    writer.write(b"data")
    writer.commit()
    writer.close()
    storage.put_small(NAME + ".json", b"{}")
    for name in (NAME, NAME + ".json"):
        assert stat.S_IMODE((storage.directory / name).stat().st_mode) == 0o600


def test_data_is_invisible_under_its_name_until_commit(storage: LocalStorage) -> None:
    writer = storage.open_writer(NAME)
    writer.write(b"half")
    assert storage.list_names() == []
    assert not (storage.directory / NAME).exists()
    writer.write(b" and the rest")
    writer.commit()
    writer.close()
    assert storage.list_names() == [NAME]
    assert (storage.directory / NAME).read_bytes() == b"half and the rest"


def test_abort_leaves_nothing(storage: LocalStorage) -> None:
    writer = storage.open_writer(NAME)
    writer.write(b"half")
    writer.abort()
    assert list(storage.directory.iterdir()) == []


def test_an_existing_name_is_never_overwritten(storage: LocalStorage) -> None:
    (storage.directory / NAME).write_bytes(b"good backup")
    with pytest.raises(StorageError, match="already exists"):
        storage.open_writer(NAME)
    assert (storage.directory / NAME).read_bytes() == b"good backup"


def test_put_small_replaces_the_whole_file(storage: LocalStorage) -> None:
    storage.put_small("m.json", b"first version, long")
    storage.put_small("m.json", b"second")
    assert storage.get_small("m.json") == b"second"
    assert sorted(p.name for p in storage.directory.iterdir()) == ["m.json"]


def test_clean_abandoned_removes_dead_leftovers_only(storage: LocalStorage) -> None:
    stale_partial = storage.directory / f".{NAME}.partial"
    stale_partial.write_bytes(b"x")
    age(stale_partial)
    orphan = storage.directory / "postgres_backup_20251203_000000.sql.gz"
    orphan.write_bytes(b"x")
    age(orphan)
    complete = storage.directory / "postgres_backup_20251202_000000.sql.gz"
    complete.write_bytes(b"x")
    age(complete)

    live = storage.open_writer("postgres_backup_20251205_000000.sql.gz")  # holds its lock
    live.write(b"in progress")
    age(live.partial_path)
    fresh = storage.directory / ".postgres_backup_20251206_000000.sql.gz.partial"
    fresh.write_bytes(b"just created")

    removed = storage.clean_abandoned(
        {orphan.name: False, complete.name: True, live.final_path.name: False}
    )
    assert sorted(removed) == sorted([stale_partial.name, orphan.name])
    assert complete.exists() and live.partial_path.exists() and fresh.exists()
    live.abort()
    assert ABANDONED_AFTER_SECONDS <= 5


def test_a_committed_backup_awaiting_its_manifest_is_not_abandoned(storage: LocalStorage) -> None:
    writer = storage.open_writer(NAME)
    writer.write(b"data")
    writer.commit()
    age(storage.directory / NAME)
    assert storage.clean_abandoned({NAME: False}) == []  # its writer still holds the lock
    writer.close()
    assert storage.clean_abandoned({NAME: False}) == [NAME]
