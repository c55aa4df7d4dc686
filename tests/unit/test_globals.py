"""Roles and globals without a server: reading pg_dumpall's statements (PostgreSQL 13 to 18),
the manifest's ``globals`` object and reading it back."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pyrage
import pytest

from bakup.catalog import Backup, ManifestError, manifest_bytes
from bakup.encryption import EncryptionError
from bakup.errors import BakupError, ConfigError, RestoreError
from bakup.globals import (
    GlobalsDump,
    Membership,
    RoleDefinition,
    encode_globals,
    load_globals,
    parse_globals,
    pg_dumpall_command,
    split_statements,
)

# pg_dumpall --globals-only of PostgreSQL 13-15: GRANTED BY after every membership.
PG13_OUTPUT = """\
--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE "Sales ""EU"" Team";
ALTER ROLE "Sales ""EU"" Team" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN \
NOREPLICATION NOBYPASSRLS;
CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE CREATEDB LOGIN NOREPLICATION NOBYPASSRLS \
CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy' VALID UNTIL \
'2030-01-01 00:00:00+00';
COMMENT ON ROLE app IS 'the application; it ''owns'' the tables';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;

--
-- User Configurations
--

--
-- User Config "app"
--

ALTER ROLE app SET search_path TO 'app', 'public';
ALTER ROLE app IN DATABASE shop SET work_mem TO '64MB';


--
-- Role memberships
--

GRANT "Sales ""EU"" Team" TO app GRANTED BY postgres;
GRANT pg_read_all_data TO app WITH ADMIN OPTION GRANTED BY postgres;


--
-- Tablespaces
--

CREATE TABLESPACE fast OWNER app LOCATION '/mnt/fast';
GRANT ALL ON TABLESPACE fast TO "Sales ""EU"" Team";


--
-- PostgreSQL database cluster dump complete
--
"""

# PostgreSQL 16-18: membership options, grants on parameters, psql's \\restrict guard.
PG16_OUTPUT = """\
\\restrict q7AbCdEf0123
SET default_transaction_read_only = off;
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION \
NOBYPASSRLS;
CREATE ROLE "Odd;Name";
ALTER ROLE "Odd;Name" WITH NOSUPERUSER NOINHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION \
NOBYPASSRLS;
ALTER ROLE "Odd;Name" SET application_name TO 'two
lines; one value';
COMMENT ON ROLE readers IS E'a \\'quoted\\'; comment';
GRANT readers TO "Odd;Name" WITH ADMIN OPTION, INHERIT FALSE, SET TRUE GRANTED BY postgres;
GRANT readers TO app WITH INHERIT TRUE GRANTED BY "Odd;Name";
GRANT "Odd;Name" TO readers;
GRANT SET ON PARAMETER work_mem TO readers;
\\unrestrict q7AbCdEf0123
"""


def test_pg13_roles_keep_their_alter_statements_and_skip_per_database_settings() -> None:
    roles, _, _ = parse_globals(PG13_OUTPUT)

    assert sorted(roles) == ['Sales "EU" Team', "app", "postgres"]
    app = roles["app"]
    assert app.statements()[0] == 'CREATE ROLE "app"'
    assert [statement.split()[3] for statement in app.statements()[1:]] == ["WITH", "SET"]
    assert "CONNECTION LIMIT 5 PASSWORD 'SCRAM-SHA-256$" in app.statements()[1]
    assert app.statements()[2] == "ALTER ROLE app SET search_path TO 'app', 'public'"
    assert not any("IN DATABASE" in statement for statement in app.statements())
    assert not any("COMMENT" in statement for statement in app.statements())


def test_a_quoted_role_name_is_unquoted_and_quoted_again_for_create() -> None:
    roles, _, _ = parse_globals(PG13_OUTPUT)

    sales = roles['Sales "EU" Team']
    assert sales.statements()[0] == 'CREATE ROLE "Sales ""EU"" Team"'
    assert sales.statements()[1].startswith('ALTER ROLE "Sales ""EU"" Team" WITH INHERIT')


def test_pg13_memberships_with_granted_by_and_admin_option() -> None:
    _, memberships, _ = parse_globals(PG13_OUTPUT)

    assert memberships == [
        Membership('Sales "EU" Team', "app", (), "postgres"),
        Membership("pg_read_all_data", "app", ("ADMIN OPTION",), "postgres"),
    ]


def test_tablespaces_are_found_and_privileges_on_them_are_not_memberships() -> None:
    _, memberships, tablespaces = parse_globals(PG13_OUTPUT)

    assert tablespaces == ["fast"]
    assert all(membership.role != "fast" for membership in memberships)


def test_pg16_memberships_with_options_and_quoted_grantor() -> None:
    _, memberships, _ = parse_globals(PG16_OUTPUT)

    assert memberships == [
        Membership(
            "readers", "Odd;Name", ("ADMIN OPTION", "INHERIT FALSE", "SET TRUE"), "postgres"
        ),
        Membership("readers", "app", ("INHERIT TRUE",), "Odd;Name"),
        Membership("Odd;Name", "readers", (), None),
    ]


def test_semicolons_and_newlines_inside_quotes_do_not_split_statements() -> None:
    roles, _, _ = parse_globals(PG16_OUTPUT)

    odd = roles["Odd;Name"]
    assert odd.statements()[2] == (
        "ALTER ROLE \"Odd;Name\" SET application_name TO 'two\nlines; one value'"
    )
    texts = [text for text, _ in split_statements(PG16_OUTPUT)]
    assert "COMMENT ON ROLE readers IS E'a \\'quoted\\'; comment'" in texts
    assert not any(text.startswith("\\") or "restrict" in text for text in texts)


def test_grants_on_parameters_are_left_out() -> None:
    _, memberships, _ = parse_globals(PG16_OUTPUT)

    assert all(membership.member != "work_mem" for membership in memberships)
    assert all("SET" not in membership.role for membership in memberships)


def test_membership_options_follow_the_target_servers_version() -> None:
    membership = Membership(
        "readers", "Odd;Name", ("ADMIN OPTION", "INHERIT FALSE", "SET TRUE"), "postgres"
    )

    assert membership.statement(170002) == (
        'GRANT "readers" TO "Odd;Name" WITH ADMIN OPTION, INHERIT FALSE, SET TRUE '
        'GRANTED BY "postgres"'
    )
    assert membership.statement(150010) == (
        'GRANT "readers" TO "Odd;Name" WITH ADMIN OPTION GRANTED BY "postgres"'
    )
    assert membership.statement(150010, with_grantor=False) == (
        'GRANT "readers" TO "Odd;Name" WITH ADMIN OPTION'
    )
    assert Membership("a", "b", ("INHERIT TRUE",)).statement(130000) == 'GRANT "a" TO "b"'


def test_unusual_grants_are_left_out_rather_than_guessed() -> None:
    sql = (
        "GRANT a TO b WITH SOMETHING NEW GRANTED BY c;\n"
        "GRANT a TO b GRANTED BY c, d;\n"
        "GRANT 'a' TO b;\n"
        "GRANT a, b TO c, d;\n"
    )
    _, memberships, _ = parse_globals(sql)

    assert memberships == [Membership(r, m) for r in ("a", "b") for m in ("c", "d")]


def test_defaults_only_a_superuser_may_name_are_left_out_and_the_rest_kept_verbatim() -> None:
    roles, _, _ = parse_globals(
        "ALTER ROLE a WITH NOSUPERUSER INHERIT LOGIN NOREPLICATION NOBYPASSRLS "
        "CONNECTION LIMIT -1 PASSWORD 'x NOSUPERUSER y';\n"
        "ALTER ROLE b WITH NOSUPERUSER NOREPLICATION NOBYPASSRLS;\n"
        "ALTER ROLE c WITH SUPERUSER NOINHERIT NOBYPASSRLS;\n"
    )

    assert roles["a"].alterations == (
        "ALTER ROLE a WITH INHERIT LOGIN CONNECTION LIMIT -1 PASSWORD 'x NOSUPERUSER y'",
    )
    assert roles["b"].statements() == ['CREATE ROLE "b"']
    assert roles["c"].alterations == ("ALTER ROLE c WITH SUPERUSER NOINHERIT",)


def test_an_alter_role_without_create_still_defines_the_role() -> None:
    roles, _, _ = parse_globals("ALTER ROLE solo WITH LOGIN;")

    assert roles == {"solo": RoleDefinition("solo", ("ALTER ROLE solo WITH LOGIN",))}


def test_pg_dumpall_argv_never_holds_a_secret_and_leaves_passwords_out_unless_asked() -> None:
    argv = pg_dumpall_command("/bin/pg_dumpall", "host=db user=u", "shop", role_passwords=False)

    assert argv == (
        "/bin/pg_dumpall",
        "--globals-only",
        "--no-password",
        "--no-role-passwords",
        "--dbname=host=db user=u",
        "--database=shop",
    )
    with_passwords = pg_dumpall_command("pg_dumpall", "host=db", "shop", role_passwords=True)
    assert "--no-role-passwords" not in with_passwords


# -- the manifest's globals object --------------------------------------------------------


def make_backup(record: dict[str, Any] | None, *, encrypted: bool = False) -> Backup:
    return Backup(
        name="postgres_backup_20260101_000000.sql.gz",
        database="shop",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        size_bytes=10,
        raw_size_bytes=20,
        sha256="0" * 64,
        compression="gzip",
        duration_seconds=1.0,
        pg_dump_version="15",
        server_version="15",
        archive_version="1.14",
        source="u@db:5432/shop",
        encrypted=encrypted,
        globals=record,
    )


def round_trip(backup: Backup) -> Backup:
    return Backup.from_json(json.loads(manifest_bytes(backup.to_json())))


def test_plain_globals_round_trip_through_the_manifest() -> None:
    sql = PG13_OUTPUT.replace("PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy' ", "")
    record = encode_globals(sql, role_passwords=False, recipients=None, pg_dumpall_version="15")
    backup = round_trip(make_backup(record))

    loaded = load_globals(backup, None)
    assert loaded is not None and loaded.sql == sql and not loaded.role_passwords
    assert set(loaded.roles) == {'Sales "EU" Team', "app", "postgres"}
    assert "data" not in backup.summary_json()["globals"]


def test_an_unencrypted_manifest_refuses_role_passwords() -> None:
    with pytest.raises(BakupError, match="unencrypted"):
        encode_globals(PG13_OUTPUT, role_passwords=False, recipients=None, pg_dumpall_version="")
    with pytest.raises(BakupError, match="unencrypted"):
        encode_globals("SET x = 1;", role_passwords=True, recipients=None, pg_dumpall_version="")


def test_encrypted_globals_need_the_identity() -> None:
    identity = pyrage.x25519.Identity.generate()
    stranger = pyrage.x25519.Identity.generate()
    record = encode_globals(
        PG13_OUTPUT, role_passwords=True, recipients=[identity.to_public()], pg_dumpall_version=""
    )
    backup = round_trip(make_backup(record, encrypted=True))
    assert b"SCRAM-SHA-256$" not in manifest_bytes(backup.to_json())

    loaded = load_globals(backup, [identity])
    assert loaded is not None and loaded.role_passwords
    assert "SCRAM-SHA-256$" in loaded.roles["app"].statements()[1]
    with pytest.raises(ConfigError, match="ENCRYPTION_IDENTITY_FILE"):
        load_globals(backup, None)
    with pytest.raises(EncryptionError, match="cannot decrypt the roles and globals"):
        load_globals(backup, [stranger])


def test_a_backup_without_globals_loads_none_and_old_manifests_stay_valid() -> None:
    data = make_backup(None).to_json()
    data.pop("globals")

    old = Backup.from_json(data)
    assert old.globals is None
    assert load_globals(old, None) is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"sha256": "0" * 64}, "does not match its sha256"),
        ({"size_bytes": 1}, "bytes, not 1"),
        ({"data": "not base64!"}, "not base64"),
        ({"role_passwords": True}, "without encryption"),
        ({"role_passwords": "no"}, "role_passwords is 'no'"),
        ({"data": None}, "data is None"),
    ],
)
def test_a_damaged_globals_object_makes_the_manifest_unreadable(
    change: dict[str, Any], reason: str
) -> None:
    record = encode_globals(
        "SET x = 1;", role_passwords=False, recipients=None, pg_dumpall_version=""
    )
    data = make_backup({**record, **change}).to_json()

    with pytest.raises(ManifestError, match=reason):
        Backup.from_json(data)


def test_a_missing_globals_field_makes_the_manifest_unreadable() -> None:
    record = encode_globals(
        "SET x = 1;", role_passwords=False, recipients=None, pg_dumpall_version=""
    )
    record.pop("sha256")

    with pytest.raises(ManifestError, match="globals: missing sha256"):
        Backup.from_json(make_backup(record).to_json())


def test_load_globals_checks_the_checksum_itself() -> None:
    record = encode_globals(
        "SET x = 1;", role_passwords=False, recipients=None, pg_dumpall_version=""
    )
    tampered = replace(
        make_backup(record), globals={**record, "data": base64.b64encode(b"other").decode()}
    )

    with pytest.raises(RestoreError, match="sha256 does not match"):
        load_globals(tampered, None)


def test_globals_dump_from_sql_parses_once() -> None:
    dump = GlobalsDump.from_sql(PG16_OUTPUT, role_passwords=False)

    assert set(dump.roles) == {"readers", "Odd;Name"}
    assert len(dump.memberships) == 3 and dump.tablespaces == ()
