"""Parallel and partial restores on a real PostgreSQL: round trip, a restore killed midway,
one table recovered into a scratch database, and ``bakup show``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Database, base_env, create_database, run_bakup, start_bakup
from tests.integration.faults import fake_pg_bin
from tests.support.postgres_server import PostgresServer, find_server_bin
from tests.support.sample_data import load_sample_data, table_fingerprints

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sample(pg_server: PostgresServer) -> Database:
    """The sample database, built once for this module."""
    db = create_database(pg_server, "sample")
    load_sample_data(pg_server, db.name)
    return db


@pytest.fixture(scope="module")
def backed_up(sample: Database, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose BACKUP_DIR holds one backup of the sample database."""
    backup_dir = tmp_path_factory.mktemp("backups")
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(backup_dir))
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    return env


def relations(server: PostgresServer, dbname: str) -> int:
    """How many tables, views, sequences and indexes ``dbname`` holds outside the catalogs."""
    return int(
        server.psql(
            dbname,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%'",
        )
    )


def staging_databases(server: PostgresServer) -> list[str]:
    """The staging databases of parallel restores present on the server."""
    names = server.psql(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'bakup_restore_%'"
    )
    return [name for name in names.splitlines() if name]


def test_parallel_restore_round_trip_patches_positions_and_leaves_no_copy(
    sample: Database, backed_up: dict[str, str], target_database: Database, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**backed_up, "TARGET_DATABASE_URL": target_database.url, "TMPDIR": str(tmp)}
    result = run_bakup("restore", "latest", "--jobs", "2", env=env)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "2 parallel jobs, local copy of" in output
    server = sample.server
    assert table_fingerprints(server, target_database.name) == table_fingerprints(
        server, sample.name
    )
    assert list(tmp.iterdir()) == []  # the local copy is gone
    assert staging_databases(server) == []


def test_local_copy_has_every_data_position_patched(
    backed_up: dict[str, str], tmp_path: Path
) -> None:
    """The copy pg_restore -j reads says where each block is, as pg_dump's own file does:
    pg_restore --list of the patched copy and of a file pg_dump wrote itself agree."""
    from bakup.archive import OFFSET_SET, RowCounter
    from bakup.catalog import list_backups
    from bakup.local_copy import local_copy
    from bakup.storage import open_storage

    storage = open_storage(backed_up["BACKUP_DIR"])
    (backup,) = list_backups(storage)
    with local_copy(storage, backup, None, directory=tmp_path) as copy:
        data = copy.path.read_bytes()
        assert copy.patched == len(copy.summary.block_positions) > 5
    reread = RowCounter()
    reread.feed(data)
    summary = reread.finish()
    with_data = [e for e in summary.entries if e.dump_id in summary.block_positions]
    assert with_data and all(entry.offset_flag == OFFSET_SET for entry in with_data)
    for entry in with_data:
        position = int.from_bytes(
            data[entry.offset_position + 1 : entry.offset_position + 1 + summary.offset_size],
            "little",
        )
        assert position == summary.block_positions[entry.dump_id]
        assert data[position] in (1, 3)  # a data block or a large-objects block starts there
    assert list(tmp_path.iterdir()) == []  # the copy itself is deleted when the block ends
    # pg_restore reads the patched copy's table of contents as it reads the stream's: the same
    # entries, in the same order (the listing's header comments name the file, so are left out).
    listed = {}
    for kind, archive in (("patched", data), ("stream", stream_bytes(storage, backup))):
        path = tmp_path.parent / f"{tmp_path.name}-{kind}.dump"
        path.write_bytes(archive)
        result = subprocess.run(
            [f"{find_server_bin()}/pg_restore", "--list", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        path.unlink()
        assert result.returncode == 0, result.stderr
        listed[kind] = [line for line in result.stdout.splitlines() if not line.startswith(";")]
    assert listed["patched"] == listed["stream"] and len(listed["patched"]) > 5


def stream_bytes(storage: Any, backup: Any) -> bytes:
    """The archive of ``backup`` as pg_dump streamed it (no positions), decompressed."""
    from bakup.dedup.reader import open_backup_archive

    with storage.open_reader(backup.name) as stored:
        archive = open_backup_archive(storage, backup, stored, None)
        try:
            return archive.read()
        finally:
            archive.close()


def start_restore(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """Start ``bakup restore`` in the background."""
    return start_bakup("restore", "latest", *args, env=env)


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_parallel_restore_killed_midway_leaves_the_target_as_it_was(
    sample: Database,
    backed_up: dict[str, str],
    target_database: Database,
    tmp_path: Path,
    how: signal.Signals,
) -> None:
    """pg_restore has filled the staging database and bakup is stopped before the swap: the
    target keeps its single table; a SIGTERM drops the staging database at once, a SIGKILL
    leaves it to the next restore, which drops it because no live run claims it."""
    server = sample.server
    server.psql(
        target_database.name, "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (7)"
    )
    bin_dir = fake_pg_bin(tmp_path / "bin")
    marker = tmp_path / "restored"
    real = find_server_bin()
    (bin_dir / "pg_restore").write_text(
        "#!/bin/bash\n"
        f'[ "$1" = --version ] && exec {real}/pg_restore --version\n'
        f'{real}/pg_restore "$@" || exit $?\n'
        f"touch {marker}\n"
        "sleep 120\n"
    )
    env = {
        **backed_up,
        "TARGET_DATABASE_URL": target_database.url,
        "PG_BIN_DIR": str(bin_dir),
        "TMPDIR": str(tmp_path),
        "PROGRESS_INTERVAL": "1",
    }
    process = start_restore(env, "--jobs", "2", "--clean")
    try:
        wait_for(marker)
        (staging,) = staging_databases(server)
        assert relations(server, staging) > 10  # the restore really happened there
        time.sleep(1.5)  # a progress line or two while bakup waits for pg_restore
        process.send_signal(how)
        output = "".join(process.communicate(timeout=60))
    finally:
        process.kill()
        process.wait()
    # Not a terminal: plain progress lines, the items pg_restore finished counted.
    assert re.search(r"Restoring postgres_backup_\S+ with 2 jobs: \d+ items in ", output), output
    assert sample.server.password not in output
    assert process.returncode == (-9 if how == signal.SIGKILL else 143)
    assert server.psql(target_database.name, "SELECT id FROM keep_me") == "7"
    assert relations(server, target_database.name) == 1
    if how == signal.SIGTERM:
        assert staging_databases(server) == []
        assert not list(tmp_path.glob(".bakup-restore-*"))
        return
    assert staging_databases(server) == [staging]
    assert len(list(tmp_path.glob(".bakup-restore-*"))) == 1  # the dead run's local copy
    env["PG_BIN_DIR"] = str(fake_pg_bin(tmp_path / "bin2"))
    again = run_bakup("restore", "latest", "--jobs", "2", "--clean", env=env)
    assert again.returncode == 0, again.stderr
    assert not list(tmp_path.glob(".bakup-restore-*"))  # removed: no live run held it
    assert f"Dropped {staging}" in again.stdout + again.stderr
    assert staging_databases(server) == []
    kept = [
        name
        for name in server.psql("postgres", "SELECT datname FROM pg_database").splitlines()
        if "_before_restore_" in name
    ]
    assert len(kept) == 1  # --clean keeps what it replaced, for the operator to drop
    assert server.psql(kept[0], "SELECT id FROM keep_me") == "7"
    server.psql("postgres", f'DROP DATABASE "{kept[0]}"')


def test_parallel_restore_is_refused_up_front_when_sessions_use_the_target(
    backed_up: dict[str, str], target_database: Database
) -> None:
    import psycopg

    with psycopg.connect(target_database.url):
        result = run_bakup(
            "restore",
            "latest",
            "--jobs",
            "2",
            env={**backed_up, "TARGET_DATABASE_URL": target_database.url},
        )
    assert result.returncode == 1
    assert "session(s) are connected to the target database" in result.stderr
    assert "--jobs 1" in result.stderr
    assert relations(target_database.server, target_database.name) == 0


def test_one_table_is_recovered_with_its_index_and_sequence(
    sample: Database, backed_up: dict[str, str], target_database: Database
) -> None:
    for jobs in ("1", "2"):
        server = sample.server
        server.psql("postgres", f'DROP DATABASE "{target_database.name}" WITH (FORCE)')
        server.psql("postgres", f'CREATE DATABASE "{target_database.name}"')
        env = {**backed_up, "TARGET_DATABASE_URL": target_database.url}
        result = run_bakup(
            "restore", "latest", "--table", "sales.customers", "--jobs", jobs, env=env
        )
        assert result.returncode == 0, result.stderr
        tables = server.psql(
            target_database.name,
            "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        assert tables == "sales.customers"
        assert server.psql(target_database.name, "SELECT count(*) FROM sales.customers") == (
            server.psql(sample.name, "SELECT count(*) FROM sales.customers")
        )
        indexes = server.psql(
            target_database.name, "SELECT indexname FROM pg_indexes WHERE schemaname = 'sales'"
        )
        assert indexes == "customers_pkey"
        # The serial column's sequence came along, at its value.
        assert server.psql(
            target_database.name, "SELECT last_value FROM sales.customers_id_seq"
        ) == (server.psql(sample.name, "SELECT last_value FROM sales.customers_id_seq"))


def test_a_table_the_backup_lacks_is_named_before_anything_is_restored(
    backed_up: dict[str, str], target_database: Database
) -> None:
    env = {**backed_up, "TARGET_DATABASE_URL": target_database.url}
    result = run_bakup("restore", "latest", "--table", "sales.nope", env=env)
    assert result.returncode == 1
    assert "the backup holds no sales.nope" in result.stderr
    assert relations(target_database.server, target_database.name) == 0


def test_schema_restore_brings_the_schema_and_its_tables(
    sample: Database, backed_up: dict[str, str], target_database: Database
) -> None:
    env = {**backed_up, "TARGET_DATABASE_URL": target_database.url}
    result = run_bakup("restore", "latest", "--schema", "audit log", "--jobs", "1", env=env)
    assert result.returncode == 0, result.stderr
    server = sample.server
    assert (
        server.psql(target_database.name, 'SELECT count(*) FROM "audit log"."Events ""v2"" table"')
        == "501"
    )
    assert (
        server.psql(
            target_database.name, "SELECT count(*) FROM pg_tables WHERE schemaname = 'sales'"
        )
        == "0"
    )


def test_show_lists_what_a_backup_holds(backed_up: dict[str, str], sample: Database) -> None:
    result = run_bakup("show", "latest", "--json", env=backed_up)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert {"sales", "audit log", "public"} <= set(shown["schemas"])
    assert shown["large_objects"] == 2
    tables = {table["name"]: table for table in shown["tables"]}
    assert tables["sales.orders"]["rows"] == 300000
    assert tables["sales.orders"]["data_bytes"] > 1_000_000
    text = run_bakup("show", env=backed_up)
    assert text.returncode == 0, text.stderr
    assert "sales.orders" in text.stdout and "300000" in text.stdout
    assert "large objects: 2" in text.stdout
    password = sample.server.password
    assert password and all(password not in out for out in (result.stdout, text.stdout))
