"""Bad input and faults, each against the real server: a clear one-line error, the right exit
status, nothing partial left behind and no good backup lost."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import REPO, Database, base_env, run_bakup
from tests.integration.faults import (
    data_partials,
    fake_pg_bin,
    is_root,
    read_only_directory,
    small_filesystem,
)
from tests.support.postgres_server import free_port
from tests.support.sample_data import load_sample_data

pytestmark = pytest.mark.integration


@pytest.fixture
def good_backup(small_db: Database, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A backup directory that already holds one good backup; returns it and `list --json`."""
    backup_dir = tmp_path / "backups"
    result = run_bakup(
        "backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
    )
    assert result.returncode == 0, result.stderr
    return backup_dir, listed(backup_dir)


def listed(backup_dir: Path) -> list[dict]:
    result = run_bakup("list", "--json", env=base_env(BACKUP_DIR=str(backup_dir)))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_nothing_partial_and_good_backup_kept(backup_dir: Path, before: list[dict]) -> None:
    """The directory holds exactly the good backups it held before: no partial or new file."""
    expected = {item["name"] for item in before} | {item["name"] + ".json" for item in before}
    present = {path.name for path in backup_dir.iterdir() if not path.name.startswith(".bakup-")}
    assert present == expected  # the run journal (.bakup-journal.jsonl) aside
    assert listed(backup_dir) == before


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *phrases: str
) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_unreachable_host_fails_with_connection_advice(
    good_backup: tuple[Path, list[dict]], small_db: Database
) -> None:
    backup_dir, before = good_backup
    url = small_db.server.url(small_db.name).replace(
        f":{small_db.server.port}/", f":{free_port()}/"
    )
    result = run_bakup("backup", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(backup_dir)))
    assert_one_line_error(result, 1, "Connection refused", "DATABASE_URL")
    assert "ERROR: Failed to create backup" in result.stdout
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


def test_unknown_host_name_fails_with_host_advice(good_backup: tuple[Path, list[dict]]) -> None:
    backup_dir, before = good_backup
    url = "postgresql://someone:pw@no-such-host.invalid:5432/db"
    result = run_bakup("backup", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(backup_dir)))
    assert_one_line_error(result, 1, "no-such-host.invalid", "host")
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


def test_wrong_password_fails_naming_authentication(
    good_backup: tuple[Path, list[dict]], small_db: Database
) -> None:
    backup_dir, before = good_backup
    url = small_db.server.url(small_db.name, password="wrong-password-123")
    result = run_bakup("backup", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(backup_dir)))
    assert_one_line_error(result, 1, "password authentication failed", "password in DATABASE_URL")
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


def test_missing_database_fails_naming_it(
    good_backup: tuple[Path, list[dict]], small_db: Database
) -> None:
    backup_dir, before = good_backup
    url = small_db.server.url("no_such_database")
    result = run_bakup("backup", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(backup_dir)))
    assert_one_line_error(result, 1, "no_such_database", "does not exist")
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        ("postgresql://u:pw@db.example.com:abc/app", "invalid port 'abc'"),
        ("postgresql://u:pw@db.example.com:70000/app", "outside 1-65535"),
        ("postgresql://u:pw@/app", "no host"),
        ("mysql://u:pw@db.example.com/app", "unknown scheme 'mysql'"),
        ("db.example.com:5432/app", "not a URL"),
    ],
)
def test_malformed_url_exits_2_naming_the_bad_part(
    good_backup: tuple[Path, list[dict]], url: str, phrase: str
) -> None:
    backup_dir, before = good_backup
    result = run_bakup("backup", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(backup_dir)))
    assert_one_line_error(result, 2, "DATABASE_URL", phrase)
    assert "pw@" not in result.stderr + result.stdout
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


def test_every_configuration_problem_is_listed_at_once(tmp_path: Path) -> None:
    env = base_env(
        DATABASE_URL="postgresql://u:pw@h:abc/db",
        RETENTION_DAYS="thirty",
        MAX_BACKUPS="-1",
        COMPRESSION="lz4",
        BACKUP_DIR=str(tmp_path),
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4
    for name in ("DATABASE_URL", "RETENTION_DAYS", "MAX_BACKUPS", "COMPRESSION"):
        assert any(name in line for line in lines), (name, lines)
    assert not any(tmp_path.iterdir())


def test_pg_dump_missing_from_path_says_to_install_client_tools(
    good_backup: tuple[Path, list[dict]], small_db: Database, tmp_path: Path
) -> None:
    backup_dir, before = good_backup
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
    env["PATH"] = str(empty_bin)
    env["PG_CLIENT_DIRS"] = f"{empty_bin}/*/bin"  # no installed client either
    result = run_bakup("backup", env=env)
    assert_one_line_error(result, 1, "pg_dump: command not found", "postgresql-client-")
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


def test_pg_dump_killed_half_way_leaves_no_partial_backup(
    good_backup: tuple[Path, list[dict]], pg_server, tmp_path: Path
) -> None:
    backup_dir, before = good_backup
    from tests.conftest import create_database

    big = create_database(pg_server, "big")
    load_sample_data(pg_server, big.name)
    bin_dir = fake_pg_bin(tmp_path / "bin", kill_after_bytes=300_000)
    env = base_env(DATABASE_URL=big.url, BACKUP_DIR=str(backup_dir), PG_BIN_DIR=str(bin_dir))
    result = run_bakup("backup", env=env)
    assert_one_line_error(result, 1, "pg_dump was killed by signal 9")
    assert_nothing_partial_and_good_backup_kept(backup_dir, before)


@pytest.mark.skipif(not shutil.which("mount"), reason="needs mount")
def test_backup_dir_not_writable_fails_saying_so(small_db: Database, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    with read_only_directory(locked):
        result = run_bakup(
            "backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(locked))
        )
        assert_one_line_error(result, 1, str(locked), "not writable")
        assert list(locked.iterdir()) == []


@pytest.mark.skipif(not is_root(), reason="mounting a small tmpfs needs root")
def test_disk_full_during_write_leaves_no_partial_file_and_keeps_good_backup(
    small_db: Database, pg_server, tmp_path: Path
) -> None:
    from tests.conftest import create_database

    big = create_database(pg_server, "big")
    load_sample_data(pg_server, big.name)
    with small_filesystem(tmp_path / "tiny", "1m") as backup_dir:
        first = run_bakup(
            "backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
        )
        assert first.returncode == 0, first.stderr
        before = listed(backup_dir)
        result = run_bakup("backup", env=base_env(DATABASE_URL=big.url, BACKUP_DIR=str(backup_dir)))
        assert_one_line_error(result, 1, "no space left", "BACKUP_DIR")
        assert_nothing_partial_and_good_backup_kept(backup_dir, before)


def test_restore_of_a_corrupted_file_reports_checksum_mismatch_before_touching_target(
    good_backup: tuple[Path, list[dict]], target_database: Database
) -> None:
    backup_dir, before = good_backup
    stored = backup_dir / before[0]["name"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    env = base_env(BACKUP_DIR=str(backup_dir), TARGET_DATABASE_URL=target_database.url)
    result = run_bakup("restore", "latest", env=env)
    assert_one_line_error(result, 1, "checksum mismatch", before[0]["name"])
    tables = target_database.psql(
        "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    )
    assert tables == "0"


def test_restore_of_an_unknown_name_exits_2(
    good_backup: tuple[Path, list[dict]], target_database: Database
) -> None:
    backup_dir, _ = good_backup
    env = base_env(BACKUP_DIR=str(backup_dir), TARGET_DATABASE_URL=target_database.url)
    result = run_bakup("restore", "postgres_backup_19990101_000000.sql.gz", env=env)
    assert_one_line_error(result, 2, "no backup named", "bakup list")


def test_an_unclaimed_partial_is_removed_and_a_published_file_without_manifest_adopted(
    good_backup: tuple[Path, list[dict]], small_db: Database
) -> None:
    backup_dir, before = good_backup
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y%m%d_%H%M%S")
    partial = backup_dir / ".postgres_backup_20200101_000000.sql.gz.partial"
    orphan = backup_dir / f"postgres_backup_{two_days_ago}.sql.gz"  # within RETENTION_DAYS
    for path in (partial, orphan):
        path.write_bytes(b"\x1f\x8b half a backup")
    assert [item["name"] for item in listed(backup_dir)] == [orphan.name, before[0]["name"]]

    result = run_bakup(
        "backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
    )
    assert result.returncode == 0, result.stderr
    assert not partial.exists() and orphan.exists()
    assert "Removed leftover of an interrupted backup" in result.stdout
    assert f"Adopted {orphan.name}" in result.stdout
    after = listed(backup_dir)
    assert [item["status"] for item in after] == ["adopted", "complete", "complete"]


def test_bakup_killed_mid_backup_leaves_nothing_listed_and_next_run_cleans_up(
    good_backup: tuple[Path, list[dict]], pg_server, tmp_path: Path
) -> None:
    backup_dir, before = good_backup
    from tests.conftest import create_database

    big = create_database(pg_server, "big")
    load_sample_data(pg_server, big.name)
    bin_dir = fake_pg_bin(tmp_path / "bin", kill_after_bytes=200_000, pause_seconds=30)
    env = base_env(DATABASE_URL=big.url, BACKUP_DIR=str(backup_dir), PG_BIN_DIR=str(bin_dir))
    process = subprocess.Popen(
        [sys.executable, "-m", "bakup.cli", "backup"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not data_partials(backup_dir):
        assert time.monotonic() < deadline, "no partial file appeared"
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run(["pkill", "-KILL", "-f", str(bin_dir)], check=False)

    leftovers = data_partials(backup_dir)
    assert leftovers
    assert listed(backup_dir) == before
    again = run_bakup("backup", env={**env, "PG_BIN_DIR": ""})
    assert again.returncode == 0, again.stderr
    assert not list(backup_dir.glob(".*.partial"))
    assert len(listed(backup_dir)) == 2
    claims = [p for p in backup_dir.glob("*.json") if '"running"' in p.read_text()]
    assert claims == []  # the dead run's claim was swept with its partial file


def test_pg_dump_dies_with_a_killed_bakup_instead_of_running_on_orphaned(
    small_db: Database, tmp_path: Path
) -> None:
    # Hold a lock pg_dump must wait for, so it is still running when bakup is killed.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import psycopg, sys, time\n"
                f"c = psycopg.connect({small_db.url!r})\n"
                "c.execute('LOCK TABLE t IN ACCESS EXCLUSIVE MODE')\n"
                "print('locked', flush=True)\n"
                "time.sleep(60)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"))
        backup = subprocess.Popen(
            [sys.executable, "-m", "bakup.cli", "backup"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def pg_dumps() -> list[str]:
            found = subprocess.run(
                ["pgrep", "-f", f"pg_dump.*{small_db.name}"], capture_output=True, text=True
            ).stdout.split()
            return found

        deadline = time.monotonic() + 30
        while not pg_dumps():
            assert time.monotonic() < deadline, "pg_dump never started"
            time.sleep(0.1)
        backup.kill()
        backup.wait()
        deadline = time.monotonic() + 5
        while pg_dumps():
            assert time.monotonic() < deadline, "pg_dump outlived bakup"
            time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait()
    # Only the dead run's claim is left: no data, nothing listed.
    assert [p.suffix for p in (tmp_path / "b").glob("postgres_backup_*")] == [".json"]
    assert listed(tmp_path / "b") == []
