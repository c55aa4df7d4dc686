"""Roles and other globals on real PostgreSQL: captured with each backup (password hashes only
into encrypted ones), created on a fresh second cluster that lacks them, and a backup that
stands when pg_dumpall fails."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyrage
import pytest

from bakup import events
from bakup.actions import run_backup
from bakup.catalog import Backup
from bakup.dburl import parse_database_url
from bakup.encryption import EncryptionError
from bakup.errors import ConfigError, RestoreError
from bakup.globals import GlobalsDump, create_missing_roles, load_globals, missing_roles
from bakup.settings import Settings
from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import fake_pg_bin
from tests.support.postgres_server import PostgresServer

pytestmark = pytest.mark.integration

HASH = "SCRAM-SHA-256$"


@dataclass
class Roles:
    """Roles made on the session's server for one test; their names are unique."""

    owner: str  # LOGIN, a password, limits, a setting
    group: str  # NOLOGIN; member of owner (a membership whose member may exist elsewhere)
    odd: str  # a name that needs quoting; member of group with ADMIN OPTION, and of owner
    zsuper: str  # a superuser: only a superuser may create it
    password: str = "owner-pw-7Hq"

    @property
    def all(self) -> list[str]:
        return [self.owner, self.group, self.odd, self.zsuper]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture
def roles(pg_server: PostgresServer) -> Iterator[Roles]:
    tag = uuid.uuid4().hex[:8]
    made = Roles(f"g{tag}_owner", f"g{tag}_group", f'g{tag} "Odd" Role', f"g{tag}_zsuper")
    pg_server.psql(
        "postgres",
        f"CREATE ROLE {made.owner} LOGIN CREATEDB PASSWORD '{made.password}' "
        "CONNECTION LIMIT 3 VALID UNTIL '2031-01-01';"
        f"ALTER ROLE {made.owner} SET search_path TO app, public;"
        f"CREATE ROLE {made.group} NOLOGIN PASSWORD 'group-pw';"
        f"CREATE ROLE {quote(made.odd)} LOGIN PASSWORD 'odd-pw';"
        f"CREATE ROLE {made.zsuper} SUPERUSER NOLOGIN;"
        f"GRANT {made.group} TO {quote(made.odd)} WITH ADMIN OPTION;"
        f"GRANT {made.owner} TO {quote(made.odd)};"
        f"GRANT {made.owner} TO {made.group};",
    )
    yield made
    pg_server.psql("postgres", f"DROP ROLE {', '.join(quote(name) for name in made.all)}")


def key_pair() -> tuple[str, object]:
    """A new age key: its public key and the identity that decrypts for it."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity.to_public()), identity


def manifest_of(backup_dir: Path) -> dict[str, object]:
    [manifest] = backup_dir.glob("*.json")
    data: dict[str, object] = json.loads(manifest.read_text())
    return data


def test_an_unencrypted_backup_records_the_roles_without_any_password_hash(
    small_db: Database, roles: Roles, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir), COMPRESSION="none")
    made = run_bakup("backup", env=env)
    assert made.returncode == 0, made.stderr
    assert "Roles and globals captured" in made.stdout + made.stderr

    data = manifest_of(backup_dir)
    record = data["globals"]
    assert isinstance(record, dict)
    assert record["role_passwords"] is False and record["encrypted"] is False
    backup = Backup.from_json(data)
    dump = load_globals(backup, None)
    assert dump is not None and not dump.role_passwords
    assert set(roles.all) <= set(dump.roles)
    # Nowhere: not in the stored files, the globals' SQL, nor what bakup printed.
    assert HASH not in dump.sql and "PASSWORD '" not in dump.sql
    for path in backup_dir.rglob("*"):
        if path.is_file():
            assert HASH.encode() not in path.read_bytes(), path
    assert HASH not in made.stdout + made.stderr
    listed = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert listed[0]["globals"]["role_passwords"] is False and "data" not in listed[0]["globals"]


def test_an_encrypted_backup_by_a_superuser_keeps_role_passwords_for_its_key_holders(
    small_db: Database, roles: Roles, tmp_path: Path
) -> None:
    public, identity = key_pair()
    backup_dir = tmp_path / "b"
    settings = Settings.from_env(
        {
            "DATABASE_URL": small_db.url,
            "BACKUP_DIR": str(backup_dir),
            "ENCRYPTION_RECIPIENTS": public,
        }
    )
    backup = run_backup(settings, settings.targets[0]).backup

    assert backup.globals is not None and backup.globals["role_passwords"] is True
    for path in backup_dir.rglob("*"):
        if path.is_file():
            assert HASH.encode() not in path.read_bytes(), path
    dump = load_globals(backup, [identity])
    assert dump is not None and dump.role_passwords
    assert HASH in " ".join(dump.roles[roles.owner].statements())
    with pytest.raises(ConfigError, match="ENCRYPTION_IDENTITY_FILE"):
        load_globals(backup, None)
    with pytest.raises(EncryptionError, match="cannot decrypt"):
        load_globals(backup, [pyrage.x25519.Identity.generate()])


def test_an_encrypted_backup_by_a_role_that_may_not_read_passwords_leaves_them_out(
    small_db: Database, roles: Roles, tmp_path: Path
) -> None:
    reader = f"g{uuid.uuid4().hex[:8]}_reader"
    server = small_db.server
    server.psql("postgres", f"CREATE ROLE {reader} LOGIN PASSWORD 'reader-pw'")
    small_db.psql(f"GRANT SELECT ON t TO {reader}")
    try:
        public, identity = key_pair()
        url = server.url(small_db.name, user=reader, password="reader-pw")
        settings = Settings.from_env(
            {"DATABASE_URL": url, "BACKUP_DIR": str(tmp_path), "ENCRYPTION_RECIPIENTS": public}
        )
        backup = run_backup(settings, settings.targets[0]).backup
    finally:
        small_db.psql(f"DROP OWNED BY {reader}")
        server.psql("postgres", f"DROP ROLE {reader}")

    assert backup.globals is not None and backup.globals["role_passwords"] is False
    dump = load_globals(backup, [identity])
    assert dump is not None and roles.owner in dump.roles and HASH not in dump.sql


def test_missing_roles_are_created_on_a_fresh_cluster_and_an_existing_one_is_left_alone(
    small_db: Database, roles: Roles, second_server: PostgresServer, tmp_path: Path
) -> None:
    public, identity = key_pair()
    settings = Settings.from_env(
        {"DATABASE_URL": small_db.url, "BACKUP_DIR": str(tmp_path), "ENCRYPTION_RECIPIENTS": public}
    )
    backup = run_backup(settings, settings.targets[0]).backup
    dump = load_globals(backup, [identity])
    assert dump is not None
    # The group exists on the target already, differently: it must stay as it is.
    second_server.psql("postgres", f"CREATE ROLE {roles.group} LOGIN CONNECTION LIMIT 7")
    target = parse_database_url(second_server.url("postgres"))
    wanted = [roles.owner, roles.group, roles.odd]
    try:
        missing = missing_roles(target, wanted)
        assert missing == sorted([roles.owner, roles.odd])

        assert create_missing_roles(target, dump, missing) == missing
        assert missing_roles(target, wanted) == []

        def row(sql: str) -> str:
            return second_server.psql("postgres", sql)

        assert row(
            "SELECT rolcanlogin, rolcreatedb, rolconnlimit, rolvaliduntil, rolconfig "
            f"FROM pg_roles WHERE rolname = '{roles.owner}'"
        ) == ('t|t|3|2031-01-01 00:00:00+00|{"search_path=app, public"}')
        assert row(
            f"SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = '{roles.group}'"
        ) == ("t|7")
        memberships = row(
            "SELECT r.rolname || ' > ' || m.rolname || ' ' || a.admin_option "
            "FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid "
            "JOIN pg_roles m ON m.oid = a.member "
            f"WHERE m.rolname LIKE '{roles.owner[:9]}%' ORDER BY 1"
        ).splitlines()
        # The new role joined the existing group and the other new role; the existing group
        # joined nothing (on the source it is a member of the owner).
        assert memberships == sorted(
            [f"{roles.group} > {roles.odd} true", f"{roles.owner} > {roles.odd} false"]
        )
        # The password came along: the owner logs in with it.
        with psycopg.connect(
            second_server.url("postgres", user=roles.owner, password=roles.password)
        ) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (roles.owner,)
    finally:
        second_server.psql(
            "postgres",
            "DROP ROLE IF EXISTS "
            + ", ".join(quote(name) for name in (roles.owner, roles.odd, roles.group)),
        )


def test_creating_roles_is_all_or_nothing_and_names_the_role_that_failed(
    small_db: Database, roles: Roles, second_server: PostgresServer, tmp_path: Path
) -> None:
    settings = Settings.from_env({"DATABASE_URL": small_db.url, "BACKUP_DIR": str(tmp_path)})
    backup = run_backup(settings, settings.targets[0]).backup
    dump = load_globals(backup, None)
    assert isinstance(dump, GlobalsDump)
    creator = f"g{uuid.uuid4().hex[:8]}_creator"
    second_server.psql("postgres", f"CREATE ROLE {creator} LOGIN CREATEROLE PASSWORD 'cr-pw'")
    target = parse_database_url(second_server.url("postgres", user=creator, password="cr-pw"))
    try:
        # The owner sorts first and is created; then the superuser is refused: nothing stays.
        with pytest.raises(RestoreError, match=f"cannot create role '{roles.zsuper}': .*superuser"):
            create_missing_roles(target, dump, [roles.owner, roles.zsuper])
        assert missing_roles(target, [roles.owner, roles.zsuper]) == [roles.owner, roles.zsuper]
        with pytest.raises(RestoreError, match="'nobody_at_all' is not in the backup's roles"):
            create_missing_roles(target, dump, ["nobody_at_all"])
    finally:
        second_server.psql("postgres", f"DROP ROLE {creator}")


def test_a_failing_pg_dumpall_leaves_the_backup_complete_and_says_so(
    small_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bin_dir = fake_pg_bin(tmp_path / "bin", failing_pg_dumpall=True)
    settings = Settings.from_env(
        {
            "DATABASE_URL": small_db.url,
            "BACKUP_DIR": str(tmp_path / "b"),
            "PG_BIN_DIR": str(bin_dir),
        }
    )
    received: list[events.Event] = []
    unsubscribe = events.subscribe(received.append)
    try:
        with caplog.at_level(logging.WARNING, logger="bakup"):
            backup = run_backup(settings, settings.targets[0]).backup
    finally:
        unsubscribe()

    assert backup.globals is None and backup.status == "complete"
    assert manifest_of(tmp_path / "b")["globals"] is None
    assert [event.kind for event in received] == [
        events.BACKUP_STARTED,
        events.BACKUP_GLOBALS_MISSING,
        events.BACKUP_SUCCEEDED,
        events.PRUNE_FINISHED,
    ]
    missing = received[1]
    assert missing.stage == "globals" and missing.details["name"] == backup.name
    assert missing.error and "refused by the test" in missing.error
    assert "roles and globals not captured" in caplog.text
    assert "refused by the test" in caplog.text

    # The CLI says the same and still succeeds.
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "c"), PG_BIN_DIR=str(bin_dir)
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    assert "roles and globals not captured" in result.stdout + result.stderr
