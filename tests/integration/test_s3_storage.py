"""Backups in an S3-compatible object store (moto's server): the whole cycle, and its faults."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, Database, base_env, run_bakup
from tests.support import s3_server
from tests.support.postgres_server import find_server_bin
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
    first = run_bakup("backup", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Backup directory: s3://backups/prod/shop" in first.stdout
    assert run_bakup("backup", env=env).returncode == 0  # prunes the first: MAX_BACKUPS=1
    listing = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert len(listing) == 1 and listing[0]["name"].endswith(".sql.gz")

    verified = run_bakup("verify", "--restore", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(run_bakup("list", "--json", env=env).stdout)[0]["verified"] is True

    restored = run_bakup("restore", "latest", env=env)
    assert restored.returncode == 0, restored.stderr
    assert target_database.psql("SELECT count(*) FROM t") == "3000"
    outputs = [first, verified, restored]
    assert not any(SECRET_KEY in run.stdout + run.stderr for run in outputs)


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


def test_the_store_dying_mid_upload_fails_the_backup_and_leaves_nothing_local(
    pg_server, tmp_path: Path, s3: S3Server
) -> None:
    from tests.conftest import create_database
    from tests.support.sample_data import load_sample_data

    big = create_database(pg_server, "big")
    load_sample_data(pg_server, big.name)
    # A pg_dump that pauses after 8 MB, so the upload is in flight when the store dies.
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "pg_dump").write_text(
        f'#!/bin/bash\n{find_server_bin()}/pg_dump "$@" | {{ head -c 8000000; sleep 4; cat; }}\n'
    )
    (slow / "pg_dump").chmod(0o755)
    env = base_env(
        DATABASE_URL=big.url, STORAGE_URL="s3://backups/big", PG_BIN_DIR=str(slow), **s3.env()
    )
    backup = subprocess.Popen(
        [sys.executable, "-m", "bakup.cli", "backup"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    s3.stop()
    stdout, stderr = backup.communicate(timeout=300)
    assert backup.returncode == 1
    assert len(stderr.strip().splitlines()) == 1 and "s3://backups/big" in stderr
    assert "ERROR: Failed to create backup" in stdout
    assert SECRET_KEY not in stdout + stderr
    pg_server.psql("postgres", f'DROP DATABASE "{big.name}" WITH (FORCE)')
