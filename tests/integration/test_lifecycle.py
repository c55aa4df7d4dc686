"""The backup lifecycle (docs/backup-lifecycle.md) on real servers: no backup is ever lost or
hidden. The original script's backups are adopted, odd manifests stop nothing, runs of one
database exclude each other, names never collide, SIGTERM is a recorded failure, and a SIGKILL
at every step of backup, publish, record, verify and prune leaves no backup lost and nothing
half-made listed, on local and object storage."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bakup.failpoints import DEDUP_POINTS, POINTS
from tests.conftest import REPO, Database, base_env, run_bakup, start_bakup, wait_for
from tests.integration.faults import data_partials, is_root, pausing_pg_bin, small_filesystem
from tests.support.postgres_server import find_server_bin
from tests.support.s3_server import S3Server

pytestmark = pytest.mark.integration


def listed(env: dict[str, str]) -> list[dict]:
    result = run_bakup("list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stamp(days_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y%m%d_%H%M%S")


def old_script_backup(database: Database, path: Path) -> None:
    """A backup made as the original script made them: pg_dump -Fc to a file, then gzip."""
    raw = path.with_suffix("")
    subprocess.run(
        [
            f"{find_server_bin()}/pg_dump",
            "-Fc",
            "--no-password",
            f"--dbname={database.url}",
            f"--file={raw}",
        ],
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    subprocess.run(["gzip", str(raw)], check=True)
    assert path.exists()


# -- adoption ----------------------------------------------------------------------------


def test_the_original_scripts_backups_are_adopted_listed_kept_restorable_and_verifiable(
    small_db: Database, target_database: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    names = [f"postgres_backup_{stamp(days)}.sql.gz" for days in (3, 2, 1)]
    for name in names:
        old_script_backup(small_db, backup_dir / name)
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))

    before = listed(env)
    assert [item["name"] for item in before] == names
    assert {item["status"] for item in before} == {"unrecorded"}
    dry = run_bakup("prune", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "Current backup count: 3" in dry.stdout

    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Removed leftover" not in result.stdout
    after = listed(env)
    assert [item["name"] for item in after][:3] == names
    assert [item["status"] for item in after] == ["adopted"] * 3 + ["complete"]
    assert all((backup_dir / name).exists() for name in names)

    restored = run_bakup(
        "restore", names[0], env={**env, "TARGET_DATABASE_URL": target_database.url}
    )
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert target_database.psql("SELECT count(*) FROM t").strip() == "3000"

    verified = run_bakup("verify", names[1], env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    manifest = json.loads((backup_dir / f"{names[1]}.json").read_text())
    assert manifest["status"] == "adopted" and manifest["verified"] is True
    assert manifest["table_row_counts"] == {"public.t": 3000}
    assert len(manifest["sha256"]) == 64
    # Described now: the next verification checks the recorded checksum.
    again = run_bakup("verify", names[1], env=env)
    assert again.returncode == 0 and "sha256 matches the manifest" in again.stdout


def test_a_bakup_backup_whose_manifest_was_lost_is_adopted_not_deleted(
    small_db: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"))
    assert run_bakup("backup", env=env).returncode == 0
    [first] = listed(env)
    (tmp_path / "b" / f"{first['name']}.json").unlink()
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    assert f"Adopted {first['name']}" in result.stdout
    assert [item["status"] for item in listed(env)] == ["adopted", "complete"]


@pytest.mark.parametrize(
    "manifest",
    ["[]", "null", '{"format": "bakup-manifest/1", "size_bytes": "big"}', "size_bytes"],
)
def test_an_odd_manifest_stops_no_backup_listing_or_prune_and_its_data_stays(
    small_db: Database, tmp_path: Path, manifest: str
) -> None:
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        MAX_BACKUPS="1",
        METRICS_TEXTFILE=str(textfile),
    )
    assert run_bakup("backup", env=env).returncode == 0
    [good] = listed(env)
    odd = tmp_path / "b" / good["name"]
    (tmp_path / "b" / f"{good['name']}.json").write_text(manifest)
    for _ in range(2):
        result = run_bakup("backup", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert result.stdout.count("is unreadable") == 1  # once per run, not per look
        assert f'bakup_manifest_unreadable_total{{database="{small_db.name}"}} 1.0' in (
            textfile.read_text()
        )
    assert odd.exists()  # never deleted because its manifest is odd, MAX_BACKUPS=1 or not
    items = listed(env)
    assert items[0]["name"] == good["name"]
    assert items[0]["status"] == "unrecorded" and "unreadable" in items[0]["note"]
    pruned = run_bakup("prune", env=env)
    assert pruned.returncode == 0 and odd.exists()


def test_a_manifest_with_a_bad_size_does_not_stop_pruning_the_others(
    small_db: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"), MAX_BACKUPS="1")
    assert run_bakup("backup", env=env).returncode == 0
    [good] = listed(env)
    path = tmp_path / "b" / f"{good['name']}.json"
    path.write_text(
        path.read_text().replace(f'"size_bytes": {good["size_bytes"]}', '"size_bytes": "big"')
    )
    for _ in range(3):
        assert run_bakup("backup", env=env).returncode == 0
    statuses = [item["status"] for item in listed(env)]
    assert statuses == ["unrecorded", "complete"]  # the odd one kept, the others pruned to 1


# -- several destinations ------------------------------------------------------------------


@pytest.mark.skipif(not is_root(), reason="mounts a file system")
def test_a_verification_that_cannot_be_recorded_in_one_destination_keeps_the_others(
    small_db: Database, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    with small_filesystem(tmp_path / "second", "4m") as second:
        env = base_env(DATABASE_URL=small_db.url, STORAGE_URL=f"file://{first} file://{second}")
        assert run_bakup("backup", env=env).returncode == 0
        [item] = listed(env)
        subprocess.run(["mount", "-o", "remount,ro", str(second)], check=True)
        result = run_bakup("verify", env=env)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        subprocess.run(["mount", "-o", "remount,rw", str(second)], check=True)
        for folder in (first, second):
            manifest = json.loads((folder / f"{item['name']}.json").read_text())
            assert manifest["status"] == "complete"
            assert (folder / item["name"]).exists()
        assert json.loads((first / f"{item['name']}.json").read_text())["verified"] is True
        # And the next runs keep it: nothing treats it as abandoned.
        assert run_bakup("backup", env=env).returncode == 0
        assert listed(env)[0]["name"] == item["name"]


# -- runs that overlap -----------------------------------------------------------------------


def test_a_prune_waits_for_a_backup_of_the_same_database_and_deletes_nothing_of_it(
    big_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=1_000_000, pause_seconds=3)
    env = base_env(DATABASE_URL=big_db.url, BACKUP_DIR=str(backup_dir), MAX_BACKUPS="1")
    backup = start_bakup("backup", env={**env, "PG_BIN_DIR": str(slow)})
    wait_for(lambda: bool(data_partials(backup_dir)), "the backup never started")
    prune = start_bakup("prune", env=env)
    prune_out, _ = prune.communicate(timeout=120)
    _, backup_err = backup.communicate(timeout=120)
    assert backup.returncode == 0, backup_err
    assert prune.returncode == 0
    assert "Waiting for another bakup run" in prune_out
    [item] = listed(env)
    assert item["status"] == "complete" and (backup_dir / item["name"]).exists()


def test_two_backups_started_in_the_same_second_both_succeed_under_different_names(
    small_db: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"))
    runs = [start_bakup("backup", env=env) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out + err
        assert "File exists" not in out + err
    names = [item["name"] for item in listed(env)]
    assert len(names) == 2 and len(set(names)) == 2


def test_sigterm_during_a_backup_is_a_recorded_failure_and_leaves_nothing(
    big_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    textfile = tmp_path / "bakup.prom"
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=1_000_000, pause_seconds=30)
    env = base_env(
        DATABASE_URL=big_db.url,
        BACKUP_DIR=str(backup_dir),
        PG_BIN_DIR=str(slow),
        METRICS_TEXTFILE=str(textfile),
    )
    run = start_bakup("backup", env=env)
    # The data's own unfinished file (a claim's manifest is briefly a .partial too).
    wait_for(lambda: bool(list(backup_dir.glob(".*.sql.gz.partial"))), "the backup never started")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 143, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "terminated" in lines[0] and "Traceback" not in out + err
    assert "ERROR: Failed to create backup: terminated" in out
    assert not list(backup_dir.glob(".*.partial"))
    assert list(backup_dir.glob("postgres_backup_*")) == []  # claim withdrawn too
    journal = (backup_dir / ".bakup-journal.jsonl").read_text().splitlines()
    assert json.loads(journal[-1])["outcome"] == "failure"
    assert 'bakup_backup_failures_total{database="' in textfile.read_text()
    assert 'stage="interrupted"} 1.0' in textfile.read_text()
    subprocess.run(["pkill", "-KILL", "-f", str(slow)], check=False)


# -- a crash at every step -------------------------------------------------------------------


@dataclass
class Place:
    """A storage destination under test, and how to look at it directly."""

    env: dict[str, str]
    keys: Callable[[], dict[str, bytes]]  # every stored name -> content (manifests), or b""
    uploads: Callable[[], int]  # incomplete multipart uploads


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "local":
        folder = tmp_path / "b"

        def local_keys() -> dict[str, bytes]:
            return {
                p.name: p.read_bytes() if p.suffix == ".json" else b""
                for p in folder.iterdir()
                if not p.name.startswith(".bakup-")
            }

        yield Place({"BACKUP_DIR": str(folder)}, local_keys, lambda: 0)
        return
    s3: S3Server = request.getfixturevalue("s3")
    client = s3.client()

    def s3_keys() -> dict[str, bytes]:
        found = client.list_objects_v2(Bucket="backups", Prefix="db/").get("Contents", [])
        return {
            item["Key"].removeprefix("db/"): (
                client.get_object(Bucket="backups", Key=item["Key"])["Body"].read()
                if item["Key"].endswith(".json")
                else b""
            )
            for item in found
            if not item["Key"].removeprefix("db/").startswith(".bakup-")
        }

    def s3_uploads() -> int:
        return len(client.list_multipart_uploads(Bucket="backups").get("Uploads", []))

    yield Place({"STORAGE_URL": "s3://backups/db", **s3.env()}, s3_keys, s3_uploads)


def assert_consistent(place: Place, env: dict[str, str]) -> list[dict]:
    """Every listed backup has its data; nothing half-made is listed. Returns the listing."""
    items = listed(env)
    keys = place.keys()
    for item in items:
        assert item["name"] in keys
        assert item["status"] in ("complete", "adopted")
    return items


def assert_settled(place: Place, env: dict[str, str]) -> list[dict]:
    """After a clean run: no claim, no deletion half done, no data without its record."""
    items = assert_consistent(place, env)
    keys = place.keys()
    for name, content in keys.items():
        if name.endswith(".json"):
            assert json.loads(content)["status"] in ("complete", "adopted"), name
            assert name.removesuffix(".json") in keys, f"{name} describes no data"
        else:
            assert f"{name}.json" in keys, f"{name} has no record"
    assert not [name for name in keys if name.startswith(".")]
    assert place.uploads() == 0
    return items


@pytest.mark.parametrize("point", [p for p in POINTS if p not in ("verifying", *DEDUP_POINTS)])
def test_a_crash_at_any_step_of_a_backup_or_prune_loses_no_backup(
    small_db: Database, place: Place, point: str
) -> None:
    env = base_env(DATABASE_URL=small_db.url, MAX_BACKUPS="1", **place.env)
    assert run_bakup("backup", env=env).returncode == 0
    [good] = listed(env)
    time.sleep(1)  # the next backup gets the next second's name

    crashed = run_bakup("backup", env={**env, "BAKUP_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL

    items = assert_consistent(place, env)
    names = [item["name"] for item in items]
    if point in ("claimed", "published"):
        assert names == [good["name"]]  # the new backup is not recorded yet: not listed
    elif point == "completed":
        assert names[0] == good["name"] and len(names) == 2
    else:  # retention had decided to delete the old one; the new one stands
        assert len(names) == 1 and names[0] != good["name"]
    newest = run_bakup("verify", env=env)
    assert newest.returncode == 0, newest.stdout + newest.stderr

    recovered = run_bakup("backup", env=env)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    settled = assert_settled(place, env)
    # MAX_BACKUPS=1 keeps the newest, and the newest verified one (verified just above).
    assert [item["status"] for item in settled] == ["complete"] * len(settled)
    assert len(settled) <= 2 and settled[-1]["verified"] is None, recovered.stdout


def test_a_crash_while_recording_a_verification_keeps_the_backup(
    small_db: Database, place: Place
) -> None:
    env = base_env(DATABASE_URL=small_db.url, **place.env)
    assert run_bakup("backup", env=env).returncode == 0
    crashed = run_bakup("verify", env={**env, "BAKUP_CRASH_AT": "verifying"})
    assert crashed.returncode == -signal.SIGKILL
    [item] = assert_settled(place, env)
    assert item["verified"] is None
    assert run_bakup("verify", env=env).returncode == 0
    assert [i["verified"] for i in assert_settled(place, env)] == [True]


def test_a_crash_mid_dump_leaves_nothing_listed_and_the_next_run_clears_it_at_once(
    big_db: Database, place: Place, tmp_path: Path
) -> None:
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=12_000_000, pause_seconds=30)
    env = base_env(DATABASE_URL=big_db.url, COMPRESSION="none", **place.env)
    run = start_bakup("backup", env={**env, "PG_BIN_DIR": str(slow)})
    if "BACKUP_DIR" in place.env:
        folder = Path(place.env["BACKUP_DIR"])
        wait_for(lambda: bool(data_partials(folder)), "no partial file")
    else:
        wait_for(lambda: place.uploads() > 0, "no multipart upload")
    run.kill()
    run.communicate()
    subprocess.run(["pkill", "-KILL", "-f", str(slow)], check=False)
    assert listed(env) == []
    recovered = run_bakup("backup", env=env)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert "Removed leftover of an interrupted backup" in recovered.stdout
    [item] = assert_settled(place, env)  # the dead run's upload aborted now, not in 15 min
    assert item["status"] == "complete"


def test_the_old_scripts_folder_migration_keeps_backups_older_than_retention_only_by_policy(
    small_db: Database, tmp_path: Path
) -> None:
    """Adopted backups follow retention like any other: with the original limits (30 days)
    one from 40 days ago goes, as the original script would have deleted it; the others stay."""
    backup_dir = tmp_path / "b"
    backup_dir.mkdir()
    old = backup_dir / f"postgres_backup_{stamp(40)}.sql.gz"
    recent = backup_dir / f"postgres_backup_{stamp(5)}.sql.gz"
    for path in (old, recent):
        path.write_bytes(gzip.compress(b"PGDMP" + b"\0" * 100))
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    assert recent.exists() and not old.exists()
    assert f"Deleted {old.name}: older than 30 days" in result.stdout


# A writer of one small file that stops for good inside the write, after its data and before
# the rename: the state a SIGKILL there leaves.
STUCK_SMALL_WRITER = """
import os, sys, time
from pathlib import Path
from bakup.storage.local import LocalStorage
os.fsync = lambda descriptor: time.sleep(600)
LocalStorage(Path(sys.argv[1])).put_small(sys.argv[2], b"{}")
"""


def test_a_small_write_killed_midway_leaves_a_temporary_the_next_prune_removes(
    small_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    chunks = backup_dir / "chunks"
    chunks.mkdir(parents=True)
    writers = {
        (folder, state): subprocess.Popen(
            [sys.executable, "-c", STUCK_SMALL_WRITER, str(folder), f"{state}.json"], cwd=REPO
        )
        for folder in (backup_dir, chunks)
        for state in ("killed", "alive")
    }
    try:
        for (folder, state), writer in writers.items():
            pattern = f".{state}.json.*.partial"
            wait_for(lambda f=folder, p=pattern: bool(list(f.glob(p))), "no write")
            if state == "killed":
                writer.kill()
                writer.wait()
        for temporary in [*backup_dir.glob(".*.partial"), *chunks.glob(".*.partial")]:
            an_hour_ago = time.time() - 3600
            os.utime(temporary, (an_hour_ago, an_hour_ago))
        env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
        pruned = run_bakup("prune", env=env)
        assert pruned.returncode == 0, pruned.stderr
        assert pruned.stdout.count("Removed the temporary file of an interrupted write") == 2
        for folder in (backup_dir, chunks):
            assert [p.name.split(".")[1] for p in folder.glob(".*.partial")] == ["alive"]
    finally:
        for writer in writers.values():
            writer.kill()
            writer.wait()
