"""Leases when two machines share a bucket: a deduplicated backup that waits for a chunk
collection, and a collection that works longer than its lease, each keep their record alive,
so the other side never takes them for dead and never deletes or trusts chunks under them.

Both "machines" run here with their own TMPDIR (their run locks are local); the leases are cut
to seconds with the BAKUP_LEASE_SECONDS test hook, so that a record nobody renews runs out
while the test watches."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, create_database, run_bakup, start_bakup, wait_for
from tests.support.postgres_server import PostgresServer
from tests.support.s3_server import S3Server
from tests.support.sample_data import load_sample_data

pytestmark = pytest.mark.integration

# Seconds: the runs under test outlast it; renewals come 0.6 s apart, with a 3 s margin (a
# loaded machine's slow writes must not lose a lease the test means to keep). Only the process
# under test gets it; the others keep the default.
LEASE = 6


@pytest.fixture(scope="module")
def database(pg_server: PostgresServer) -> Database:
    db = create_database(pg_server, "leases")
    load_sample_data(pg_server, db.name)
    return db


def shared_env(database: Database, s3: S3Server, tmp_path: Path, machine: str) -> dict[str, str]:
    folder = tmp_path / machine
    folder.mkdir(exist_ok=True)
    return base_env(
        DATABASE_URL=database.url,
        STORAGE_URL="s3://backups/shared",
        BACKUP_FORMAT="dedup",
        MAX_BACKUPS="1",
        TMPDIR=str(folder),
        **s3.env(),
    )


def objects(s3: S3Server, suffix: str) -> dict[str, dict]:
    """The JSON objects under shared/ whose key ends with ``suffix``, by key."""
    client = s3.client()
    listed = client.list_objects_v2(Bucket="backups", Prefix="shared/").get("Contents", [])
    found = {}
    for item in listed:
        if item["Key"].endswith(suffix):
            body = client.get_object(Bucket="backups", Key=item["Key"])["Body"].read()
            found[item["Key"]] = json.loads(body)
    return found


def verify_all(env: dict[str, str]) -> None:
    for item in json.loads(run_bakup("list", "--json", env=env).stdout):
        checked = run_bakup("verify", item["name"], env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_backup_waiting_for_a_collection_keeps_its_claim_alive_past_its_lease(
    database: Database, s3: S3Server, tmp_path: Path
) -> None:
    env = shared_env(database, s3, tmp_path, "one")
    assert run_bakup("backup", env=env).returncode == 0
    # A live collection record held by this test process, for longer than the backup's lease.
    from bakup.dedup.collect import _Record
    from bakup.lifecycle import Owner

    record = _Record(Owner.current(), datetime.now(UTC) + timedelta(minutes=5))
    s3.client().put_object(
        Bucket="backups", Key="shared/chunks/gc-00000000000000aa.json", Body=record.to_json()
    )
    waiting = start_bakup("backup", env={**env, "BAKUP_LEASE_SECONDS": str(LEASE)})
    try:

        def claims() -> list[dict]:
            return [m for m in objects(s3, ".json").values() if m.get("status") == "running"]

        wait_for(lambda: bool(claims()), "the backup's claim")
        time.sleep(LEASE * 1.5)  # an unrenewed claim would have run out by now
        assert waiting.poll() is None, "the backup should still wait for the collection"
        (claim,) = claims()
        # Renewed while waiting: another machine still sees a live claim.
        assert datetime.fromisoformat(claim["lease_expires_at"]) > datetime.now(UTC)
        s3.client().delete_object(Bucket="backups", Key="shared/chunks/gc-00000000000000aa.json")
        stdout, stderr = waiting.communicate(timeout=120)
    finally:
        waiting.kill()
        waiting.wait()
    assert waiting.returncode == 0, stdout + stderr
    assert "Waiting for the chunk collection" in stdout
    verify_all(env)


def test_a_collection_longer_than_its_lease_keeps_its_record_and_a_backup_waits_for_it(
    database: Database, s3: S3Server, tmp_path: Path
) -> None:
    one = shared_env(database, s3, tmp_path, "one")
    two = shared_env(database, s3, tmp_path, "two")
    for _ in range(2):
        assert run_bakup("backup", env=one).returncode == 0
        database.psql("UPDATE sales.orders SET amount = amount + 1 WHERE id % 7 = 0")
    # Machine one's prune stops with its collection recorded, for over twice its lease.
    prune = start_bakup(
        "prune",
        env={
            **one,
            "BAKUP_LEASE_SECONDS": str(LEASE),
            "BAKUP_PAUSE_AT": f"collecting:{LEASE * 2.5}",
        },
    )
    try:
        wait_for(lambda: bool(gc_records_in(s3)), "the collection record")
        time.sleep(LEASE * 1.25)  # an unrenewed record would have run out by now
        (gc,) = gc_records_in(s3).values()
        assert datetime.fromisoformat(gc["lease_expires_at"]) > datetime.now(UTC)
        # Machine two's backup must not trust the chunk listing while that collection lives.
        backup = run_bakup("backup", env=two)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        assert "Waiting for the chunk collection" in backup.stdout
        stdout, stderr = prune.communicate(timeout=120)
    finally:
        prune.kill()
        prune.wait()
    assert prune.returncode == 0, stdout + stderr
    assert not gc_records_in(s3)
    verify_all(one)


def gc_records_in(s3: S3Server) -> dict[str, dict]:
    return {k: v for k, v in objects(s3, ".json").items() if "/chunks/gc-" in k}
