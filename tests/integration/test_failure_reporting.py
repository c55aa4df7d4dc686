"""Failures reported as what they are, against the real server: the stage that failed, whether
a retry may help, and advice naming the variable the user actually set."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest

from tests.conftest import REPO, Database, base_env, run_bakup
from tests.integration.test_faults import assert_one_line_error

pytestmark = pytest.mark.integration


def run_limited(
    *args: str, env: dict[str, str], file_size_limit: int
) -> subprocess.CompletedProcess[str]:
    """Run ``bakup`` with a limit on the size of any file it writes (writes past it fail
    with EFBIG, a real storage error)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "bakup.cli", *args],
        # The limit would also cut the bytecode caches Python writes, poisoning later runs.
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        preexec_fn=limit,
    )


def failure_stages(textfile: Path) -> dict[str, float]:
    """stage -> count of the non-zero bakup_backup_failures_total series in a textfile."""
    found = {}
    for line in textfile.read_text().splitlines():
        if line.startswith("bakup_backup_failures_total{"):
            series, _, value = line.rpartition(" ")
            if float(value):
                found[series.split('stage="')[1].split('"')[0]] = float(value)
    return found


def test_a_storage_error_under_encryption_is_reported_as_a_storage_error(
    small_db: Database, tmp_path: Path
) -> None:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    backup_dir = tmp_path / "b"
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(backup_dir),
        COMPRESSION="none",
        ENCRYPTION_RECIPIENTS=recipient,
        METRICS_TEXTFILE=str(textfile),
    )
    result = run_limited("backup", env=env, file_size_limit=32 * 1024)
    assert_one_line_error(result, 1, "File too large", str(backup_dir))
    assert "encryption" not in result.stderr.lower()
    assert failure_stages(textfile) == {"store": 1}
    assert [path.name for path in backup_dir.iterdir() if not path.name.startswith(".")] == []


@pytest.fixture
def backup_dir_with_one_backup(small_db: Database, tmp_path: Path) -> Path:
    """A backup directory already holding one good backup of ``small_db``."""
    backup_dir = tmp_path / "backups"
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    return backup_dir


def stored_names(backup_dir: Path) -> set[str]:
    """Every file in the directory but the run journal: backups, manifests, leftovers."""
    return {path.name for path in backup_dir.iterdir() if path.name != ".bakup-journal.jsonl"}


@contextlib.contextmanager
def table_locked(database: Database, table: str) -> Iterator[subprocess.Popen[str]]:
    """Hold ``table`` in ACCESS EXCLUSIVE mode from another session. Writing a line to the
    holder's stdin makes it drop the table and commit; otherwise it lets go when the block
    ends."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import psycopg, sys\n"
                f"c = psycopg.connect({database.url!r})\n"
                f"c.execute('LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE')\n"
                "print('locked', flush=True)\n"
                "if sys.stdin.readline():\n"
                f"    c.execute('DROP TABLE {table}')\n"
                "    c.commit()\n"
                "    print('dropped', flush=True)\n"
                "sys.stdin.read()\n"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def wait_for_lock_waiter(database: Database, timeout: float = 30) -> None:
    """Wait until some session waits for a lock in ``database`` (pg_dump, blocked)."""
    deadline = time.monotonic() + timeout
    query = (
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
        f"WHERE NOT l.granted AND d.datname = '{database.name}'"
    )
    while database.psql(query) == "0":
        assert time.monotonic() < deadline, "pg_dump never waited for the lock"
        time.sleep(0.1)


def test_a_table_dropped_while_pg_dump_runs_is_a_transient_dump_failure(
    small_db: Database, tmp_path: Path
) -> None:
    backup_dir, textfile = tmp_path / "b", tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir), METRICS_TEXTFILE=str(textfile)
    )
    with table_locked(small_db, "t") as holder:
        backup = subprocess.Popen(
            [sys.executable, "-m", "bakup.cli", "backup"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_lock_waiter(small_db)
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("drop\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "dropped"
        stdout, stderr = backup.communicate(timeout=60)
    result = subprocess.CompletedProcess(backup.args, backup.returncode, stdout, stderr)
    assert_one_line_error(result, 1, 'relation "public.t" does not exist', "next run will retry")
    assert "DATABASE_URL" not in result.stderr
    assert failure_stages(textfile) == {"dump": 1}
    assert [name for name in stored_names(backup_dir) if not name.startswith(".")] == []


def test_a_server_that_never_answers_fails_the_run_within_the_connect_timeout(
    backup_dir_with_one_backup: Path,
) -> None:
    before = stored_names(backup_dir_with_one_backup)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel accepts the connections; nobody ever answers
        port = listener.getsockname()[1]
        env = base_env(
            DATABASE_URL=f"postgresql://app:pw-SECRET@127.0.0.1:{port}/app",
            BACKUP_DIR=str(backup_dir_with_one_backup),
            PG_CONNECT_TIMEOUT="2",
        )
        started = time.monotonic()
        result = run_bakup("backup", env=env, timeout=30)
        elapsed = time.monotonic() - started
    assert_one_line_error(result, 1, "timeout expired", "PG_CONNECT_TIMEOUT")
    assert elapsed < 10
    assert "pw-SECRET" not in result.stdout + result.stderr
    assert stored_names(backup_dir_with_one_backup) == before


def test_a_table_locked_too_long_fails_the_run_naming_the_lock(
    small_db: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir), PG_LOCK_WAIT_TIMEOUT="2")
    with table_locked(small_db, "t"):
        started = time.monotonic()
        result = run_bakup("backup", env=env, timeout=60)
        elapsed = time.monotonic() - started
    assert_one_line_error(result, 1, "statement timeout", "public.t", "PG_LOCK_WAIT_TIMEOUT")
    assert elapsed < 30
    assert [name for name in stored_names(backup_dir) if not name.startswith(".")] == []


@pytest.mark.parametrize("inside", [False, True])
def test_backup_dir_that_is_a_file_says_so(
    small_db: Database, tmp_path: Path, inside: bool
) -> None:
    existing = tmp_path / "backups.tar"
    existing.write_bytes(b"not a directory")
    backup_dir = existing / "nightly" if inside else existing
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir))
    result = run_bakup("backup", env=env)
    assert_one_line_error(
        result, 1, f"{existing} is a file, not a directory", "point BACKUP_DIR at a directory"
    )
    assert "File exists" not in result.stderr
    check = run_bakup("check", env=env)
    assert check.returncode == 1 and f"{existing} is a file, not a directory" in check.stdout
    assert existing.read_bytes() == b"not a directory"


def test_list_json_prints_only_json_on_stdout_and_warnings_on_stderr(
    backup_dir_with_one_backup: Path,
) -> None:
    name = "postgres_backup_20240101_000000.sql.gz"
    (backup_dir_with_one_backup / name).write_bytes(b"\x1f\x8b not really a backup")
    (backup_dir_with_one_backup / f"{name}.json").write_text("[]")
    result = run_bakup("list", "--json", env=base_env(BACKUP_DIR=str(backup_dir_with_one_backup)))
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert len(listed) >= 1
    assert name in result.stderr  # the warning about its manifest, where a person sees it


def test_summary_preview_into_a_missing_folder_is_one_line(
    backup_dir_with_one_backup: Path, tmp_path: Path
) -> None:
    target = tmp_path / "missing" / "folder" / "summary.html"
    env = base_env(BACKUP_DIR=str(backup_dir_with_one_backup))
    result = run_bakup("summary", "--preview", str(target), env=env)
    assert_one_line_error(result, 1, str(target), "No such file or directory", "existing folder")
    assert not target.parent.exists()
