"""Backups in an S3-compatible object store (moto's server): the whole cycle, and its faults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import interrupt_mid_upload, pausing_pg_bin
from tests.integration.storage_cycle import full_cycle
from tests.support import s3_server
from tests.support.s3_server import SECRET_KEY, S3Server

pytestmark = pytest.mark.integration


def test_backup_list_verify_restore_and_prune_in_s3(
    small_db: Database, target_database: Database, s3: S3Server
) -> None:
    env = base_env(
        DATABASE_URL=small_db.url,
        STORAGE_URL="s3://backups/prod/shop",
        TARGET_DATABASE_URL=target_database.url,
        MAX_BACKUPS="1",
        **s3.env(),
    )
    _, runs = full_cycle(env, target_database, suffix=".sql.gz")
    assert "Backup directory: s3://backups/prod/shop" in runs[0].stdout
    assert not any(SECRET_KEY in run.stdout + run.stderr for run in runs)


def test_a_missing_bucket_is_one_clear_line(small_db: Database, s3: S3Server) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="s3://no-such-bucket/x", **s3.env())
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bakup: s3://no-such-bucket/x: the bucket does not exist: create it or fix STORAGE_URL"
    ]


def test_wrong_credentials_are_one_clear_line_without_the_secret(small_db: Database) -> None:
    server = s3_server.start(check_credentials=True)
    try:
        server.create_bucket("backups")
        env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="s3://backups/x", **server.env())
        result = run_bakup("backup", env=env)
    finally:
        server.stop()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bakup: s3://backups/x: the credentials were refused: "
        "check the cloud's credential variables"
    ]
    assert SECRET_KEY not in result.stdout + result.stderr


def test_an_unreachable_store_is_one_clear_line_and_nothing_is_listed(
    small_db: Database, s3: S3Server
) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="s3://backups/x", **s3.env())
    assert run_bakup("backup", env=env).returncode == 0
    s3.stop()  # the storage outage
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "s3://backups/x" in result.stderr and SECRET_KEY not in result.stderr


def test_an_unknown_storage_scheme_is_a_configuration_error(small_db: Database) -> None:
    result = run_bakup("backup", env=base_env(DATABASE_URL=small_db.url, STORAGE_URL="ftp://x/y"))
    assert result.returncode == 2
    assert "STORAGE_URL" in result.stderr


def test_the_store_dying_mid_upload_fails_the_backup_in_one_line(
    big_db: Database, tmp_path: Path, s3: S3Server
) -> None:
    # Uncompressed and paused after 12 MB: the multipart upload is under way when it dies.
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=12_000_000, pause_seconds=5)
    env = base_env(
        DATABASE_URL=big_db.url,
        STORAGE_URL="s3://backups/big",
        COMPRESSION="none",
        PG_BIN_DIR=str(slow),
        **s3.env(),
    )
    client = s3.client()
    status, stdout, stderr = interrupt_mid_upload(
        env,
        uploading=lambda: bool(client.list_multipart_uploads(Bucket="backups").get("Uploads")),
        interrupt=lambda _: s3.stop(),
    )
    assert status == 1
    [line] = stderr.strip().splitlines()
    assert line.startswith("bakup: s3://backups/big/postgres_backup_"), line
    assert ": the store could not be reached (after retries)" in line
    assert "ERROR: Failed to create backup" in stdout
    assert SECRET_KEY not in stdout + stderr


def test_incomplete_uploads_of_dead_runs_are_aborted_and_live_ones_kept(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bakup.storage.objectstore import ORPHAN_AFTER
    from bakup.storage.uploads import S3Uploads, abandoned

    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    client = s3.client()
    started = {}
    for key in (
        "prod/postgres_backup_20261125_020000.sql.gz",
        "prod/shop/postgres_backup_20261125_020000.sql.gz",  # another database's folder
        "staging/postgres_backup_20261125_020000.sql.gz",
    ):
        upload_id = client.create_multipart_upload(Bucket="backups", Key=key)["UploadId"]
        client.upload_part(
            Bucket="backups", Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 5_300_000
        )
        started[key] = upload_id

    uploads = S3Uploads("backups", "prod/", s3.endpoint)
    [pending] = uploads.pending()
    assert pending.key == "prod/postgres_backup_20261125_020000.sql.gz"
    assert pending.upload_id == started[pending.key]
    now = datetime.now(UTC)
    assert abandoned([pending], now, ORPHAN_AFTER) == []  # fresh: its run may be alive

    for dead in abandoned([pending], now + timedelta(hours=1), ORPHAN_AFTER):
        uploads.abort(dead)
    left = client.list_multipart_uploads(Bucket="backups")["Uploads"]
    assert sorted(upload["Key"] for upload in left) == [
        "prod/shop/postgres_backup_20261125_020000.sql.gz",
        "staging/postgres_backup_20261125_020000.sql.gz",
    ]


def test_a_backup_leaves_a_live_looking_upload_alone_without_warning(
    small_db: Database, s3: S3Server
) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="s3://backups/prod", **s3.env())
    client = s3.client()
    key = "prod/postgres_backup_1.sql.gz"
    upload_id = client.create_multipart_upload(Bucket="backups", Key=key)["UploadId"]
    # A part just uploaded is what tells a live upload here: moto reports a fixed date in
    # 2010 as every upload's start.
    client.upload_part(Bucket="backups", Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr
    assert len(client.list_multipart_uploads(Bucket="backups")["Uploads"]) == 1
