"""Several destinations at once: a local folder for fast restores and an S3 bucket."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration


def test_every_backup_goes_to_every_destination_and_retention_runs_on_each(
    small_db: Database, tmp_path: Path, s3: S3Server
) -> None:
    local = tmp_path / "local"
    env = base_env(
        DATABASE_URL=small_db.url,
        STORAGE_URL=f"file://{local} s3://backups/shop",
        MAX_BACKUPS="1",
        **s3.env(),
    )
    for _ in range(2):
        result = run_bakup("backup", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    assert f"Backup directory: {local} + s3://backups/shop" in result.stdout
    [item] = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert sorted(p.name for p in local.glob("postgres_backup_*")) == [
        item["name"],
        item["name"] + ".json",
    ]
    s3_only = base_env(DATABASE_URL=small_db.url, STORAGE_URL="s3://backups/shop", **s3.env())
    assert [i["name"] for i in json.loads(run_bakup("list", "--json", env=s3_only).stdout)] == [
        item["name"]
    ]
    verified = run_bakup("verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "the copy in s3://backups/shop matches the manifest" in verified.stdout


def test_a_backup_missing_from_one_destination_is_not_complete(
    small_db: Database, tmp_path: Path, s3: S3Server
) -> None:
    local = tmp_path / "local"
    env = base_env(DATABASE_URL=small_db.url, STORAGE_URL=f"{local},s3://backups/x", **s3.env())
    assert run_bakup("backup", env=env).returncode == 0
    s3.stop()  # the bucket is unreachable: the next backup must fail and leave nothing
    before = sorted(p.name for p in local.iterdir() if not p.name.startswith(".bakup-"))
    result = run_bakup("backup", env=env)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    after = sorted(p.name for p in local.iterdir() if not p.name.startswith(".bakup-"))
    assert after == before  # no partial or half-stored backup in the local folder either
