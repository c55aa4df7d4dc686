"""Which incomplete multipart uploads count as abandoned, and whose they are."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bakup.storage.objectstore import ORPHAN_AFTER
from bakup.storage.uploads import PendingUpload, _directly_under, abandoned

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def upload(grew_ago: timedelta) -> PendingUpload:
    return PendingUpload("p/x", "id", NOW - grew_ago)


def test_an_upload_that_grew_lately_is_kept() -> None:
    assert abandoned([upload(timedelta(seconds=20))], NOW, ORPHAN_AFTER) == []
    assert abandoned([upload(timedelta(minutes=14))], NOW, ORPHAN_AFTER) == []


def test_an_upload_quiet_for_longer_than_the_limit_is_abandoned() -> None:
    quiet = upload(timedelta(minutes=16))
    assert abandoned([quiet, upload(timedelta(minutes=1))], NOW, ORPHAN_AFTER) == [quiet]


def test_only_uploads_directly_under_the_prefix_are_ours() -> None:
    assert _directly_under("prod/", "prod/postgres_backup_1.sql.gz")
    assert not _directly_under("prod/", "prod/shop/postgres_backup_1.sql.gz")
    assert not _directly_under("prod/", "production/postgres_backup_1.sql.gz")
    assert _directly_under("", "postgres_backup_1.sql.gz")
    assert not _directly_under("", "shop/postgres_backup_1.sql.gz")
