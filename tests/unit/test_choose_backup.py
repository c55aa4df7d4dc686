"""Which backup `bakup restore` picks: `latest` passes over backups that failed verification."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from bakup.catalog import Backup
from bakup.errors import BackupNotFound
from bakup.restore import choose_backup

START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def backup(day: int, verified: bool | None = None, error: str = "") -> Backup:
    created = START + timedelta(days=day)
    return Backup(
        name=f"postgres_backup_{created:%Y%m%d_%H%M%S}.sql.gz",
        database="app",
        created_at=created,
        size_bytes=10,
        raw_size_bytes=40,
        sha256="0" * 64,
        compression="gzip",
        duration_seconds=1.0,
        pg_dump_version="15.8",
        server_version="15.8",
        archive_version="1.14.0",
        source="u@h:5432/app",
        verified=verified,
        verification={"error": error} if error else None,
    )


def test_latest_is_the_newest_backup_that_did_not_fail_verification(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, unverified, bad = backup(1, True), backup(2), backup(3, False, "checksum mismatch")
    caplog.set_level(logging.INFO, "bakup")
    assert choose_backup([bad, good, unverified], "latest") is unverified
    assert f"skipping {bad.name}: its verification failed (checksum mismatch)" in caplog.text
    assert f"Restoring {unverified.name} (newest backup that did not fail verification)" in (
        caplog.text
    )


def test_latest_skips_every_failed_one_and_says_so_for_each() -> None:
    good = backup(1, True)
    assert choose_backup([good, backup(2, False), backup(3, False)], "latest") is good


def test_when_every_backup_failed_verification_none_is_chosen() -> None:
    with pytest.raises(BackupNotFound, match=r"every backup failed verification.*name one"):
        choose_backup([backup(1, False, "rows differ"), backup(2, False)], "latest")
    with pytest.raises(BackupNotFound, match="no complete backups"):
        choose_backup([], "latest")


def test_a_named_backup_is_restored_even_if_it_failed_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = backup(1, False, "rows differ")
    assert choose_backup([bad, backup(2, True)], bad.name) is bad
    assert choose_backup([bad], bad.name + ".json") is bad
    assert "failed verification (rows differ): restoring it because it was named" in caplog.text
    with pytest.raises(BackupNotFound, match="bakup list"):
        choose_backup([bad], "postgres_backup_20000101_000000.sql.gz")
