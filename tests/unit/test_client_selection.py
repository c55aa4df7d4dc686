"""Which installed PostgreSQL client serves which server: the pure choice, and the words."""

from __future__ import annotations

from pathlib import Path

import pytest

from bakup.clients import Client, choose_client, client_dirs
from bakup.pgtools import diagnose
from notifications.advice import advice_for


def installed(*majors: int) -> list[Client]:
    return [
        Client(major, f"PostgreSQL {major}.4", Path(f"/usr/lib/postgresql/{major}/bin"))
        for major in majors
    ]


@pytest.mark.parametrize(
    ("majors", "server", "chosen"),
    [
        ((13, 14, 15, 16, 17), 15, 15),
        ((13, 14, 16, 17), 15, 16),
        ((17, 13, 16), 14, 16),
        ((13, 14, 15, 16, 17, 18), 12, 13),
        ((18,), 13, 18),
    ],
)
def test_the_oldest_client_not_older_than_the_server_is_chosen(
    majors: tuple[int, ...], server: int, chosen: int
) -> None:
    client = choose_client(installed(*majors), server)
    assert client is not None and client.major == chosen


@pytest.mark.parametrize("majors", [(13, 14), (), (17,)])
def test_no_client_is_chosen_when_every_one_is_older_than_the_server(
    majors: tuple[int, ...],
) -> None:
    assert choose_client(installed(*majors), 18) is None


def test_client_dirs_default_to_the_debian_and_pgdg_rpm_layouts_and_can_be_replaced() -> None:
    assert client_dirs({}) == ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
    assert client_dirs({"PG_CLIENT_DIRS": "/opt/pg/*/bin:/x/bin"}) == ("/opt/pg/*/bin", "/x/bin")


@pytest.mark.parametrize(
    "stderr",
    [
        # pg_dump 15 and later: the versions on a "detail:" line
        "pg_dump: error: aborting because of server version mismatch\n"
        "pg_dump: detail: server version: 17.2 (Debian 17.2-1.pgdg120+1); "
        "pg_dump version: 15.8 (Debian 15.8-0+deb12u1)\n",
        # pg_dump 14 and earlier: on an "error:" line before the refusal
        "pg_dump: error: server version: 17.2; pg_dump version: 15.8\n"
        "pg_dump: error: aborting because of server version mismatch\n",
    ],
)
def test_pg_dumps_refusal_of_a_newer_server_is_one_line_naming_both_and_what_to_install(
    stderr: str,
) -> None:
    failure = diagnose("pg_dump", stderr, 1, None)
    assert failure.message == (
        "pg_dump 15.8 cannot dump a PostgreSQL 17 server (server version mismatch): "
        "install postgresql-client-17 (apt) or point PG_BIN_DIR at a client 17 or newer"
    )
    assert (failure.stage, failure.transient) == ("dump", False)


@pytest.mark.parametrize(
    "error",
    [
        "pg_dump 15.8 cannot dump a PostgreSQL 17 server (server version mismatch): ...",
        "no installed PostgreSQL client is new enough for app@db:5432/app: the server is 18, "
        "the newest installed client is 17 (/usr/lib/postgresql/17/bin): install "
        "postgresql-client-18 (apt) or set PG_BIN_DIR",
    ],
)
def test_alerts_about_a_too_old_client_advise_installing_the_servers_major(error: str) -> None:
    advice = advice_for(error)
    assert "postgresql-client-<major>" in advice and "PG_BIN_DIR" in advice
