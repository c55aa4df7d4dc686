"""Backups in Google Cloud Storage (gcp-storage-emulator with GCS's XML API): the whole cycle
through the same code path as S3 and Azure, and its faults."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import interrupt_mid_upload, pausing_pg_bin
from tests.integration.storage_cycle import full_cycle
from tests.support import gcs_server
from tests.support.gcs_server import GcsServer

pytestmark = pytest.mark.integration


@pytest.fixture
def gcs(tmp_path: Path) -> Iterator[GcsServer]:
    server = gcs_server.start(tmp_path)
    server.create_bucket("backups")
    yield server
    server.stop()


def private_key(server: GcsServer) -> str:
    """The key's base64 body, without the PEM armour that is the same in every key."""
    pem = json.loads(server.credentials.read_text())["private_key"]
    return "".join(pem.strip().splitlines()[1:-1])


def test_backup_list_verify_restore_and_prune_in_google_cloud_storage(
    small_db: Database, target_database: Database, gcs: GcsServer
) -> None:
    env = base_env(
        DATABASE_URL=small_db.url,
        STORAGE_URL="gs://backups/prod/shop",
        MAX_BACKUPS="1",
        TARGET_DATABASE_URL=target_database.url,
        **gcs.env(),
    )
    listing, runs = full_cycle(env, target_database, suffix=".sql.gz")
    assert "Backup directory: gs://backups/prod/shop" in runs[0].stdout
    # What the bucket holds, seen through the other API: one backup, its manifest, the journal.
    stored = gcs.object_names("backups")
    assert sorted(name.rsplit("/", 1)[-1] for name in stored) == sorted(
        [listing[0]["name"], listing[0]["name"] + ".json", ".bakup-journal.jsonl"]
    )
    assert all(name.startswith("prod/shop/") for name in stored)
    key = private_key(gcs)
    assert not any(key[:40] in run.stdout + run.stderr for run in runs)


def test_a_missing_bucket_is_one_clear_line(small_db: Database, gcs: GcsServer) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="gs://no-such-bucket/x", **gcs.env())
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bakup: gs://no-such-bucket/x: the bucket does not exist: create it or fix STORAGE_URL"
    ]


def test_wrong_credentials_are_one_clear_line_without_the_key(
    small_db: Database, gcs: GcsServer
) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="gs://backups/x", **gcs.impostor_env())
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bakup: gs://backups/x: the credentials were refused: "
        "check the cloud's credential variables"
    ]
    impostor = json.loads(Path(env["GOOGLE_SERVICE_ACCOUNT"]).read_text())["private_key"]
    assert impostor.splitlines()[1] not in result.stdout + result.stderr


def test_an_unreadable_service_account_file_is_one_clear_line(
    small_db: Database, tmp_path: Path
) -> None:
    broken = tmp_path / "account.json"
    broken.write_text('{"type": "service_account", "private_key": "not a key"')
    env = base_env(
        DATABASE_URL=small_db.url, STORAGE_URL="gs://backups/x", GOOGLE_SERVICE_ACCOUNT=str(broken)
    )
    result = run_bakup("backup", env=env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bakup: STORAGE_URL gs://backups/x: GCP cred")
    assert lines[0].endswith("check the cloud's credential variables"), lines
    assert "not a key" not in result.stdout + result.stderr


def test_a_storage_outage_is_one_clear_line(small_db: Database, gcs: GcsServer) -> None:
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="gs://backups/x", **gcs.env())
    assert run_bakup("backup", env=env).returncode == 0
    gcs.stop()
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bakup: gs://backups/x: the store could not be reached"), lines


def test_bakup_killed_mid_upload_leaves_no_backup_and_a_later_run_aborts_its_upload(
    big_db: Database, tmp_path: Path, gcs: GcsServer
) -> None:
    # Uncompressed and paused after 12 MB: the multipart upload is under way when bakup dies.
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=12_000_000, pause_seconds=5)
    env = base_env(
        DATABASE_URL=big_db.url, STORAGE_URL="gs://backups/big", COMPRESSION="none", **gcs.env()
    )
    status, _, _ = interrupt_mid_upload(
        {**env, "PG_BIN_DIR": str(slow)},
        uploading=lambda: bool(gcs.pending_uploads()),
        interrupt=lambda process: process.send_signal(signal.SIGKILL),
    )
    assert status == -signal.SIGKILL

    assert json.loads(run_bakup("list", "--json", env=env).stdout) == []
    [left] = gcs.pending_uploads()  # its parts are stored, but it is no backup
    assert left.startswith("big/postgres_backup_")
    # Only the dead run's claim is stored beside it.
    assert [n for n in gcs.object_names("backups") if "postgres_backup_" in n] == [f"{left}.json"]

    # Its claim proves its run dead (same machine, process gone): aborted at once, through
    # the XML API, signed with the same key as the uploads.
    again = run_bakup("backup", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(json.loads(run_bakup("list", "--json", env=env).stdout)) == 1
    assert gcs.pending_uploads() == []
    assert (
        f"Removed leftover of an interrupted backup: {left.split('/')[-1]} (incomplete upload)"
        in again.stdout
    )
    assert "WARNING" not in again.stdout + again.stderr


def test_s3_and_gcs_destinations_together(small_db: Database, gcs: GcsServer, s3) -> None:
    # S3_ENDPOINT_URL is for the s3:// destination only: the gs:// one keeps its own address.
    env = base_env(
        DATABASE_URL=small_db.url,
        STORAGE_URL="s3://backups/both gs://backups/both",
        **s3.env(),
        **gcs.env(),
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [backup] = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert f"both/{backup['name']}" in gcs.object_names("backups")
    assert run_bakup("verify", env=env).returncode == 0


def test_the_store_dying_mid_upload_fails_the_backup_in_one_line(
    big_db: Database, tmp_path: Path, gcs: GcsServer
) -> None:
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=12_000_000, pause_seconds=5)
    env = base_env(
        DATABASE_URL=big_db.url,
        STORAGE_URL="gs://backups/big",
        COMPRESSION="none",
        PG_BIN_DIR=str(slow),
        **gcs.env(),
    )
    status, stdout, stderr = interrupt_mid_upload(
        env,
        uploading=lambda: bool(gcs.pending_uploads()),
        interrupt=lambda _: gcs.stop(),
    )
    assert status == 1
    [line] = stderr.strip().splitlines()
    assert line.startswith("bakup: gs://backups/big/postgres_backup_"), line
    assert ": the store could not be reached (after retries): check the endpoint" in line
    assert "ERROR: Failed to create backup" in stdout


def test_a_key_that_may_not_list_uploads_warns_and_the_backup_still_succeeds(
    small_db: Database, gcs: GcsServer
) -> None:
    gcs.control("deny-upload-listing")  # a least-privilege key: no storage.multipartUploads.list
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL="gs://backups/x", **gcs.env())
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    [warning] = [line for line in output.splitlines() if "WARNING" in line]
    assert "gs://backups/x: could not clean up incomplete uploads (HTTPStatusError" in warning
    assert "backups are not affected" in warning and "lifecycle rule" in warning
    assert private_key(gcs)[:40] not in output
    assert len(json.loads(run_bakup("list", "--json", env=env).stdout)) == 1
