"""Which incomplete multipart uploads count as abandoned, and whose they are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bakup.storage.uploads import PendingUpload, _directly_under, abandoned

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def upload(started_ago: timedelta, last_part_ago: timedelta | None = None) -> PendingUpload:
    initiated = NOW - started_ago
    return PendingUpload("p/x", "id", initiated, NOW - (last_part_ago or started_ago))


def test_an_upload_that_still_grows_is_kept_however_old_it_is() -> None:
    # A backup of a large database may upload for hours: its age alone says nothing.
    assert abandoned([upload(timedelta(hours=5), timedelta(seconds=20))], NOW) == []


def test_an_upload_quiet_for_longer_than_the_limit_is_abandoned() -> None:
    quiet = upload(timedelta(hours=2), timedelta(minutes=16))
    assert abandoned([quiet], NOW) == [quiet]


def test_an_upload_without_parts_counts_from_its_start() -> None:
    assert abandoned([upload(timedelta(minutes=14))], NOW) == []
    old = upload(timedelta(minutes=16))
    assert abandoned([old], NOW) == [old]


def test_only_uploads_directly_under_the_prefix_are_ours() -> None:
    assert _directly_under("prod/", "prod/postgres_backup_1.sql.gz")
    assert not _directly_under("prod/", "prod/shop/postgres_backup_1.sql.gz")
    assert not _directly_under("prod/", "production/postgres_backup_1.sql.gz")
    assert _directly_under("", "postgres_backup_1.sql.gz")
    assert not _directly_under("", "shop/postgres_backup_1.sql.gz")
