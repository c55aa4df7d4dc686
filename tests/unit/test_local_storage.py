"""Local storage: atomic writes, private permissions, claims created once, and discarding only
what no live writer holds."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bakup.errors import StorageError
from bakup.storage.local import LocalStorage, LocalWriter

NAME = "postgres_backup_20251204_141855.sql.gz"


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


def test_discard_unfinished_leaves_a_file_a_live_writer_holds(storage: LocalStorage) -> None:
    stale = storage.directory / f".{NAME}.partial"
    stale.write_bytes(b"x")
    live = storage.open_writer("postgres_backup_20251205_000000.sql.gz")  # holds its lock
    live.write(b"in progress")
    assert storage.unfinished_names() == sorted([NAME, "postgres_backup_20251205_000000.sql.gz"])
    assert storage.discard_unfinished(NAME)
    assert not storage.discard_unfinished("postgres_backup_20251205_000000.sql.gz")
    assert live.partial_path.exists() and not stale.exists()
    live.abort()
    assert not live.partial_path.exists()


def test_a_published_file_is_never_replaced_by_a_second_publication(
    storage: LocalStorage,
) -> None:
    first = storage.open_writer(NAME)
    second = LocalWriterFor(storage, "other")
    first.write(b"first")
    first.commit()
    second.write(b"second")
    with pytest.raises(StorageError, match="already exists"):
        second.commit()
    second.abort()
    assert (storage.directory / NAME).read_bytes() == b"first"
    first.close()


def LocalWriterFor(storage: LocalStorage, tag: str) -> LocalWriter:  # noqa: N802 - a factory
    """A writer for NAME whose partial file has another name: as if it raced the first."""
    writer = LocalWriter.__new__(LocalWriter)
    LocalWriter.__init__(writer, storage.directory, f"{NAME}.{tag}")
    writer.final_path = storage.directory / NAME
    return writer


def test_create_small_creates_only_once(storage: LocalStorage) -> None:
    assert storage.create_small("claim.json", b"mine")
    assert not storage.create_small("claim.json", b"yours")
    assert storage.get_small("claim.json") == b"mine"
    assert sorted(p.name for p in storage.directory.iterdir()) == ["claim.json"]
