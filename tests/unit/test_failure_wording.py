"""How failures are classified and worded: pg_dump's and libpq's messages, the alerts' advice,
redaction, and the limits on waiting for a server."""

from __future__ import annotations

import pytest

from bakup.dburl import parse_database_url
from bakup.pgtools import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LOCK_WAIT_TIMEOUT,
    connect_timeout,
    diagnose,
    lock_wait_timeout,
)
from bakup.redaction import redact
from notifications.advice import DEFAULT, advice_for

DROPPED = (
    'pg_dump: error: query failed: ERROR:  relation "public.x" does not exist\n'
    "pg_dump: detail: Query was: LOCK TABLE public.x IN ACCESS SHARE MODE\n"
)


@pytest.mark.parametrize(
    "stderr",
    [DROPPED, "pg_dump: error: query failed: ERROR:  could not open relation with OID 16402\n"],
)
def test_a_table_dropped_mid_dump_is_a_transient_dump_failure(stderr: str) -> None:
    failure = diagnose("pg_dump", stderr, 1, None)
    assert (failure.stage, failure.transient) == ("dump", True)
    assert "dropped while pg_dump ran" in failure.message
    assert "DATABASE_URL" not in failure.message


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ('FATAL:  database "shop" does not exist', "database name in SHOP_URL"),
        ('FATAL:  role "shopper" does not exist', "user name in SHOP_URL"),
    ],
)
def test_a_missing_database_or_role_is_a_permanent_connection_failure(
    line: str, names: str
) -> None:
    stderr = f'pg_dump: error: connection to server at "h" (1.2.3.4), port 5432 failed: {line}\n'
    failure = diagnose("pg_dump", stderr, 1, None, variable="SHOP_URL")
    assert (failure.stage, failure.transient) == ("connect", False)
    assert names in failure.message


def test_a_lock_wait_timeout_names_the_locked_table_and_is_transient() -> None:
    stderr = (
        "pg_dump: error: query failed: ERROR:  canceling statement due to statement timeout\n"
        "pg_dump: detail: Query was: LOCK TABLE public.orders IN ACCESS SHARE MODE\n"
    )
    failure = diagnose("pg_dump", stderr, 1, None)
    assert (failure.stage, failure.transient) == ("dump", True)
    assert "public.orders" in failure.message and "PG_LOCK_WAIT_TIMEOUT" in failure.message


def test_advice_names_the_variable_the_connection_came_from() -> None:
    stderr = 'pg_restore: error: connection to server at "h", port 1 failed: Connection refused'
    failure = diagnose("pg_restore", stderr, 1, None, variable="TARGET_DATABASE_URL")
    assert "TARGET_DATABASE_URL" in failure.message
    assert "DATABASE_URL" not in failure.message.replace("TARGET_DATABASE_URL", "")


@pytest.mark.parametrize(
    "error",
    [
        "pg_restore: error: unsupported version (1.16) in file header",
        "cannot import the archive",
        "upload failed: transport endpoint is not connected",
        "the server reported an error",
    ],
)
def test_advice_for_port_matches_whole_words_only(error: str) -> None:
    assert "malformed" not in advice_for(error)


@pytest.mark.parametrize(
    "error",
    [
        "DATABASE_URL has an invalid port 'abc': the port must be a number such as 5432",
        "DATABASE_URL has port 70000, outside 1-65535",
        "DATABASE_URL: the password seems to contain unencoded characters (@ # / ? %): x",
    ],
)
def test_advice_for_a_malformed_url(error: str) -> None:
    assert "malformed" in advice_for(error)


def test_advice_for_a_dropped_table_and_for_other_missing_objects() -> None:
    assert "dropped" in advice_for(DROPPED.splitlines()[0])
    assert "DATABASE_URL" in advice_for('FATAL:  database "shop" does not exist')
    assert advice_for("something else entirely") == DEFAULT


def test_redaction_never_garbles_text_for_a_short_password() -> None:
    text = 'pg_dump: error: connection to server at "db", port 5432 failed: password for "app"'
    assert redact(text, ["p"]) == text
    assert redact("postgresql://app:p@db/x failed", ["p"]) == "postgresql://app:***@db/x failed"
    assert redact("host=db password=p dbname=x", ["p"]) == "host=db password=*** dbname=x"


def test_redaction_hides_whole_occurrences_raw_and_percent_encoded() -> None:
    secret = "Zq7-p@ss:w/rd"
    text = f"one {secret}, two Zq7-p%40ss%3Aw%2Frd; three sslpassword='{secret} x'"
    redacted = redact(text, [secret, None, ""])
    assert redacted == "one ***, two ***; three sslpassword=***"
    # A word that merely contains the secret is someone else's word.
    assert redact("hunter22 is not hunter2", ["hunter2"]) == "hunter22 is not ***"


def test_connect_timeout_the_urls_own_wins_then_the_variable_then_the_default() -> None:
    plain = parse_database_url("postgresql://u:pw@h/app")
    own = parse_database_url("postgresql://u:pw@h/app?connect_timeout=7")
    assert connect_timeout(plain, {}) == DEFAULT_CONNECT_TIMEOUT
    assert connect_timeout(plain, {"PG_CONNECT_TIMEOUT": "2"}) == 2
    assert connect_timeout(plain, {"PGCONNECT_TIMEOUT": "4"}) == 4
    assert connect_timeout(own, {"PG_CONNECT_TIMEOUT": "2"}) == 7
    assert lock_wait_timeout({}) == DEFAULT_LOCK_WAIT_TIMEOUT
    assert lock_wait_timeout({"PG_LOCK_WAIT_TIMEOUT": "2"}) == 2
