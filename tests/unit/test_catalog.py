"""Names, manifests and listing: what is published is listed, with the state its manifest
records; a malformed manifest never stops a listing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bakup.catalog import (
    Backup,
    BackupNotFound,
    backup_name,
    find_backup,
    list_backups,
    write_manifest,
)
from bakup.lifecycle import retire
from bakup.storage.local import LocalStorage


def make_backup(name: str, created_at: datetime, **fields: object) -> Backup:
    values: dict = {
        "name": name,
        "database": "app",
        "created_at": created_at,
        "size_bytes": 10,
        "raw_size_bytes": 40,
        "sha256": "0" * 64,
        "compression": "gzip",
        "duration_seconds": 1.5,
        "pg_dump_version": "16.4",
        "server_version": "16.4",
        "archive_version": "1.15.0",
        "source": "u@h:5432/app",
        "table_row_counts": {"public.a": 3},
    }
    values.update(fields)
    return Backup(**values)


def store(storage: LocalStorage, backup: Backup) -> None:
    (storage.directory / backup.name).write_bytes(b"data")
    write_manifest(storage, backup)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    local = LocalStorage(tmp_path / "backups")
    local.prepare()
    return local


def test_names_follow_the_original_script_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2025, 12, 4, 15, 18, 55, tzinfo=paris)
    assert backup_name(moment, "gzip") == "postgres_backup_20251204_141855.sql.gz"
    assert backup_name(moment, "zstd") == "postgres_backup_20251204_141855.sql.zst"
    assert backup_name(moment, "none") == "postgres_backup_20251204_141855.sql"


def test_a_manifest_round_trips_and_lists_its_backup(storage: LocalStorage) -> None:
    backup = make_backup(
        "postgres_backup_20251204_141855.sql.gz", datetime(2025, 12, 4, 14, 18, 55, tzinfo=UTC)
    )
    store(storage, backup)
    assert list_backups(storage) == [backup]


def test_backups_without_a_valid_manifest_are_listed_as_unrecorded_never_hidden(
    storage: LocalStorage, caplog: pytest.LogCaptureFixture
) -> None:
    good = make_backup("postgres_backup_20251204_000000.sql.gz", datetime(2025, 12, 4, tzinfo=UTC))
    store(storage, good)
    (storage.directory / "postgres_backup_20251205_000000.sql.gz").write_bytes(b"no manifest")
    (storage.directory / "postgres_backup_20251206_000000.sql.zst").write_bytes(b"data")
    (storage.directory / "postgres_backup_20251206_000000.sql.zst.json").write_text("{broken")
    (storage.directory / "notes.txt").write_text("not a backup")
    with caplog.at_level(logging.WARNING):
        listed = list_backups(storage, "app")
    assert [b.name for b in listed] == [
        good.name,
        "postgres_backup_20251205_000000.sql.gz",
        "postgres_backup_20251206_000000.sql.zst",
    ]
    assert [b.status for b in listed] == ["complete", "unrecorded", "unrecorded"]
    assert listed[1].compression == "gzip" and listed[2].compression == "zstd"
    assert listed[1].created_at == datetime(2025, 12, 5, tzinfo=UTC)
    assert listed[1].size_bytes == len(b"no manifest") and listed[1].database == "app"
    assert "unreadable" in caplog.text


@pytest.mark.parametrize(
    "manifest",
    [
        "[]",
        "null",
        '"text"',
        "{}",
        '{"format": "bakup-manifest/1"}',
        "not json at all",
        "\xff\xfe",
    ],
)
def test_a_malformed_manifest_is_reported_and_its_data_listed(
    storage: LocalStorage, manifest: str
) -> None:
    name = "postgres_backup_20251205_000000.sql.gz"
    (storage.directory / name).write_bytes(b"data")
    (storage.directory / f"{name}.json").write_bytes(manifest.encode("latin-1"))
    [listed] = list_backups(storage)
    assert listed.status == "unrecorded" and "unreadable" in (listed.note or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size_bytes", "big"),
        ("size_bytes", True),
        ("created_at", 5),
        ("created_at", "2025-12-01T00:00:00"),
        ("table_row_counts", {"public.a": "many"}),
        ("verified", "yes"),
        ("status", "imaginary"),
    ],
)
def test_a_manifest_with_a_mistyped_field_is_unreadable_not_a_crash_later(
    storage: LocalStorage, field: str, value: object
) -> None:
    backup = make_backup(
        "postgres_backup_20251201_000000.sql.gz", datetime(2025, 12, 1, tzinfo=UTC)
    )
    data = backup.to_json()
    data[field] = value
    with pytest.raises(ValueError):
        Backup.from_json(data)


def test_find_backup_by_name_or_latest(storage: LocalStorage) -> None:
    older = make_backup("postgres_backup_20251201_000000.sql.gz", datetime(2025, 12, 1, tzinfo=UTC))
    newer = make_backup("postgres_backup_20251202_000000.sql.gz", datetime(2025, 12, 2, tzinfo=UTC))
    for backup in (newer, older):
        store(storage, backup)
    assert find_backup(storage, "latest") == newer
    assert find_backup(storage, older.name) == older
    with pytest.raises(BackupNotFound, match="bakup list"):
        find_backup(storage, "postgres_backup_19990101_000000.sql.gz")


def test_latest_in_an_empty_directory_says_there_are_none(storage: LocalStorage) -> None:
    with pytest.raises(BackupNotFound, match="no complete backups"):
        find_backup(storage, "latest")


def test_retire_removes_manifest_and_data(storage: LocalStorage) -> None:
    backup = make_backup(
        "postgres_backup_20251201_000000.sql.gz", datetime(2025, 12, 1, tzinfo=UTC)
    )
    store(storage, backup)
    retire(storage, backup)
    assert list(storage.directory.iterdir()) == []


def test_list_json_fields_are_the_contract() -> None:
    verified_at = datetime(2025, 12, 2, 3, 0, tzinfo=UTC)
    backup = make_backup(
        "postgres_backup_20251201_000000.sql.gz", datetime(2025, 12, 1, tzinfo=UTC)
    ).with_verification(True, verified_at, {"level": "restore"})
    summary = backup.summary_json()
    for field in (
        "name",
        "database",
        "created_at",
        "size_bytes",
        "raw_size_bytes",
        "sha256",
        "compression",
        "verified",
        "verified_at",
    ):
        assert field in summary
    assert summary["created_at"] == "2025-12-01T00:00:00Z"
    assert summary["verified_at"] == "2025-12-02T03:00:00Z"
    assert summary["verified"] is True
