"""Crashes of a deduplicated backup and of its prune on an object store (moto's S3 server): a
real SIGKILL at each step whose effect differs from a local folder's (chunks are single PUTs,
the index a multipart upload, the collection record an object), then every listed backup must
verify and the next run must leave exactly the chunks the indexes name, no collection record,
no claim and no incomplete upload."""

from __future__ import annotations

import json
import time

import pytest

from bakup.dedup.reader import read_index
from tests.conftest import Database, base_env, create_database, run_bakup
from tests.integration.faults import crash_then_recover
from tests.support.postgres_server import PostgresServer
from tests.support.s3_server import S3Server
from tests.support.sample_data import load_sample_data

pytestmark = pytest.mark.integration

PREFIX = "shop/"


@pytest.fixture(scope="module")
def database(pg_server: PostgresServer) -> Database:
    db = create_database(pg_server, "dedupcrash")
    load_sample_data(pg_server, db.name)
    return db


def bucket(s3: S3Server) -> dict[str, bytes]:
    """Every object under the prefix, by key relative to it."""
    client = s3.client()
    listed = client.list_objects_v2(Bucket="backups", Prefix=PREFIX).get("Contents", [])
    return {
        item["Key"].removeprefix(PREFIX): client.get_object(Bucket="backups", Key=item["Key"])[
            "Body"
        ].read()
        for item in listed
    }


@pytest.mark.parametrize(
    "point", ["chunks-stored", "published", "completed", "collecting", "collected-one"]
)
def test_a_crash_at_a_step_of_a_dedup_backup_or_prune_on_s3_keeps_every_kept_backup_whole(
    database: Database, s3: S3Server, point: str
) -> None:
    env = base_env(
        DATABASE_URL=database.url,
        STORAGE_URL=f"s3://backups/{PREFIX.rstrip('/')}",
        BACKUP_FORMAT="dedup",
        MAX_BACKUPS="1",
        **s3.env(),
    )
    assert run_bakup("backup", env=env).returncode == 0
    database.psql("UPDATE sales.orders SET amount = amount + 1 WHERE id % 13 = 0")
    time.sleep(1)  # the next backup gets the next second's name
    assert len(crash_then_recover(env, point)) <= 2

    stored = bucket(s3)
    chunks = {key.removeprefix("chunks/") for key in stored if len(key) == len("chunks/") + 64}
    referenced = {
        chunk
        for key, data in stored.items()
        if key.endswith(".sql.dedup")
        for chunk, _ in read_index(data, key)
    }
    assert chunks == referenced
    assert not [key for key in stored if key.startswith("chunks/gc-")]
    manifests = [json.loads(data) for key, data in stored.items() if key.endswith(".json")]
    assert manifests and all(m.get("status") == "complete" for m in manifests), manifests
    uploads = s3.client().list_multipart_uploads(Bucket="backups", Prefix=PREFIX)
    assert not uploads.get("Uploads"), uploads
