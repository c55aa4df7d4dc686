"""Deduplicated backups in every storage backend: moto's S3, Azurite, the GCS emulator, and a
local folder and a bucket at once. Each backs up twice (the second day storing a fraction of
the first), restores with identical rows and passes a test restore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import zstandard

from bakup.dedup.reader import read_index
from tests.conftest import REPO, Database, base_env, run_bakup
from tests.integration.test_azure_storage import azure
from tests.integration.test_gcs_storage import gcs
from tests.support.azurite import Azurite
from tests.support.gcs_server import GcsServer
from tests.support.s3_server import S3Server
from tests.support.sample_data import table_fingerprints

pytestmark = pytest.mark.integration

__all__ = ["azure", "gcs"]  # fixtures, used by name

CHUNK_SIZES = """
import json, sys
from bakup.storage import open_storage
storage = open_storage(tuple(sys.argv[1:]) if len(sys.argv) > 2 else sys.argv[1])
print(json.dumps([store.list_sizes() for store in storage.chunk_storages()]))
"""


def chunk_sizes(env: dict[str, str], location: str) -> list[dict[str, int]]:
    """The objects of each destination's chunk store and their sizes, as bakup lists them."""
    listed = subprocess.run(
        [sys.executable, "-c", CHUNK_SIZES, *location.split()],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    stores: list[dict[str, int]] = json.loads(listed.stdout)
    return [{name: size for name, size in store.items() if len(name) == 64} for store in stores]


def dedup_cycle(env: dict[str, str], source: Database, target: Database) -> list[dict[str, Any]]:
    """Back ``source`` up, change 1 % of a table, back up again, restore the second into
    ``target`` (two jobs) and test-restore it; asserts each step and returns the listing."""
    first = run_bakup("backup", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    source.psql(
        "INSERT INTO sales.customers (name) SELECT 'day two ' || g FROM generate_series(1, 200) g"
    )
    second = run_bakup("backup", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    listing = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert [item["backup_format"] for item in listing] == ["dedup", "dedup"]
    assert all(item["name"].endswith(".sql.dedup") for item in listing)
    day_one, day_two = (item["dedup"] for item in listing)
    assert day_one["new_bytes"] > 0 and day_one["chunks"] > 5
    assert 0 < day_two["new_bytes"] < day_one["new_bytes"] * 0.2, day_two
    assert day_two["new_chunks"] < day_two["chunks"] / 4

    restored = run_bakup("restore", "latest", "--jobs", "2", env=env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert table_fingerprints(target.server, target.name) == table_fingerprints(
        source.server, source.name
    )
    verified = run_bakup("verify", "--restore", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(run_bakup("list", "--json", env=env).stdout)[-1]["verified"] is True
    return listing


def stored_once(env: dict[str, str], location: str, listing: list[dict[str, Any]]) -> None:
    """Every destination holds exactly the chunks the two backups stored, once each."""
    expected = sum(item["dedup"]["new_bytes"] for item in listing)
    for store in chunk_sizes(env, location):
        assert sum(store.values()) == expected
        assert len(store) == sum(item["dedup"]["new_chunks"] for item in listing)


def test_dedup_round_trip_in_s3(big_db: Database, target_database: Database, s3: S3Server) -> None:
    env = base_env(
        DATABASE_URL=big_db.url,
        STORAGE_URL="s3://backups/prod/shop",
        BACKUP_FORMAT="dedup",
        TARGET_DATABASE_URL=target_database.url,
        **s3.env(),
    )
    listing = dedup_cycle(env, big_db, target_database)
    stored_once(env, env["STORAGE_URL"], listing)
    keys = [
        item["Key"]
        for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket="backups")
        for item in page.get("Contents", [])
    ]
    assert "prod/shop/chunks/key" in keys
    assert all(key.startswith("prod/shop/") for key in keys)


def test_dedup_round_trip_in_azure_blob_storage(
    big_db: Database, target_database: Database, azure: Azurite
) -> None:
    env = base_env(
        DATABASE_URL=big_db.url,
        STORAGE_URL="az://backups/prod",
        BACKUP_FORMAT="dedup",
        TARGET_DATABASE_URL=target_database.url,
        **azure.env(),
    )
    listing = dedup_cycle(env, big_db, target_database)
    stored_once(env, env["STORAGE_URL"], listing)


def test_dedup_round_trip_in_google_cloud_storage(
    big_db: Database, target_database: Database, gcs: GcsServer
) -> None:
    env = base_env(
        DATABASE_URL=big_db.url,
        STORAGE_URL="gs://backups/prod/shop",
        BACKUP_FORMAT="dedup",
        TARGET_DATABASE_URL=target_database.url,
        **gcs.env(),
    )
    listing = dedup_cycle(env, big_db, target_database)
    stored_once(env, env["STORAGE_URL"], listing)
    stored = gcs.object_names("backups")
    assert all(name.startswith("prod/shop/") for name in stored)
    assert "prod/shop/chunks/key" in stored


def test_dedup_round_trip_to_a_folder_and_a_bucket_at_once(
    big_db: Database, target_database: Database, tmp_path: Path, s3: S3Server
) -> None:
    local = tmp_path / "local"
    env = base_env(
        DATABASE_URL=big_db.url,
        STORAGE_URL=f"file://{local} s3://backups/shop",
        BACKUP_FORMAT="dedup",
        TARGET_DATABASE_URL=target_database.url,
        **s3.env(),
    )
    listing = dedup_cycle(env, big_db, target_database)
    # One backup names each chunk once: both destinations hold every chunk, under one name.
    stored_once(env, env["STORAGE_URL"], listing)
    [in_folder, in_bucket] = chunk_sizes(env, env["STORAGE_URL"])
    assert in_folder == in_bucket
    assert set(in_folder) == {p.name for p in (local / "chunks").iterdir() if len(p.name) == 64}
    s3_only = {**env, "STORAGE_URL": "s3://backups/shop"}
    names = [item["name"] for item in json.loads(run_bakup("list", "--json", env=s3_only).stdout)]
    assert names == [item["name"] for item in listing]
    # Either destination alone holds every chunk its indexes name, readable with its key.
    for alone in (f"file://{local}", "s3://backups/shop"):
        verified = run_bakup("verify", env={**env, "STORAGE_URL": alone})
        assert verified.returncode == 0, verified.stdout + verified.stderr
    # A chunk lost from the first destination: reads fall back to the bucket's copy, and
    # verify still says the folder lacks it.
    newest = listing[-1]["name"]
    lost = read_index((local / newest).read_bytes(), newest)[0][0]
    (local / "chunks" / lost).unlink()
    damaged = run_bakup("verify", env=env)
    assert damaged.returncode == 1
    [line] = damaged.stderr.strip().splitlines()
    assert f"chunks of {listing[-1]['name']} are missing from {local / 'chunks'} " in line, line
    assert f"(the first: {lost[:16]}...)" in line, line
    # Back, but damaged in the folder (a whole zstd frame of other data): a restore would read
    # the bucket's intact copy, and verify must still name the folder's bad one.
    (local / "chunks" / lost).write_bytes(zstandard.ZstdCompressor().compress(b"not the chunk"))
    damaged = run_bakup("verify", env=env)
    assert damaged.returncode == 1
    [line] = damaged.stderr.strip().splitlines()
    assert f"chunk {lost[:16]}... in {local / 'chunks'} does not match its name" in line, line
