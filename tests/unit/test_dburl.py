"""DATABASE_URL parsing by libpq's rules, and errors that never show the password."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from bakup.dburl import DatabaseUrlError, parse_database_url, redact_url

PASSWORD = "p@ss:w/rd?#%&é"
ENCODED = quote(PASSWORD, safe="")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_both_schemes_and_a_percent_encoded_password_with_special_characters(scheme: str) -> None:
    params = parse_database_url(f"{scheme}://app%20user:{ENCODED}@db.example.com:6543/app")
    assert params.password == PASSWORD
    assert (params.user, params.host, params.port, params.dbname) == (
        "app user",
        "db.example.com",
        "6543",
        "app",
    )


def test_ipv6_host_default_port_and_query_parameters() -> None:
    params = parse_database_url("postgresql://u:pw@[::1]/app?sslmode=require&connect_timeout=5")
    assert params.host == "::1" and params.port == "5432"
    assert params.params["sslmode"] == "require"
    assert params.params["connect_timeout"] == "5"
    assert params.display() == "u@[::1]:5432/app"


def test_several_hosts_and_a_socket_directory() -> None:
    multi = parse_database_url("postgresql://u:pw@one:5432,two:5433/app")
    assert multi.host == "one,two" and multi.port == "5432,5433"
    socket = parse_database_url("postgresql://u:pw@/app?host=/var/run/postgresql")
    assert socket.host == "/var/run/postgresql"


def test_secrets_stay_out_of_display_conninfo_repr_and_go_only_to_pgpassword() -> None:
    params = parse_database_url(f"postgresql://u:{ENCODED}@h:5432/app")
    for text in (params.display(), params.conninfo(), repr(params)):
        assert PASSWORD not in text and ENCODED not in text
    env = params.child_env({"PATH": "/bin"})
    assert env["PGPASSWORD"] == PASSWORD
    assert PASSWORD not in " ".join(value for key, value in env.items() if key != "PGPASSWORD")
    assert params.connect_kwargs()["password"] == PASSWORD


def test_with_dbname_keeps_the_server_and_credentials() -> None:
    params = parse_database_url("postgresql://u:pw@h:5/app").with_dbname("scratch")
    assert (params.dbname, params.host, params.password) == ("scratch", "h", "pw")


@pytest.mark.parametrize(
    ("url", "phrase"),
    [
        (f"postgresql://u:{ENCODED}@h:abc/app", "invalid port 'abc'"),
        (f"postgresql://u:{ENCODED}@h:99999/app", "outside 1-65535"),
        (f"postgresql://u:{ENCODED}@/app", "no host"),
        (f"mysql://u:{ENCODED}@h/app", "unknown scheme 'mysql'"),
        (f"u:{ENCODED}@h/app", "not a URL"),
        ("", "empty"),
        (f"postgresql://u:{ENCODED}@h:5432", "names no database"),
        (f"postgresql://u:{ENCODED}@h/app?bogus=1", "bogus"),
    ],
)
def test_malformed_urls_name_the_bad_part_never_the_password(url: str, phrase: str) -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        parse_database_url(url, name="SHOP_URL")
    message = str(raised.value)
    assert "SHOP_URL" in message
    assert phrase in message
    assert PASSWORD not in message and ENCODED not in message


def test_redact_url_hides_the_password() -> None:
    assert redact_url(f"postgresql://u:{ENCODED}@h/app") == "postgresql://u:***@h/app"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Hash#Pw9@127.0.0.1:5432/db",
        "postgresql://u:p@ss@host/db",
        "postgresql://u:p@ss@host?sslmode=require",
        "postgresql://u:pa/ss@host/db",
        "postgresql://u:pa?ss@host/db",
        "postgresql://u:100%@host/db",
        "postgresql://u:a%zzb@host/db",
    ],
)
def test_an_unencoded_character_in_the_password_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(DatabaseUrlError) as raised:
        parse_database_url(url)
    # The whole message is fixed text: no piece of the URL, so no piece of the password.
    assert str(raised.value) == (
        "DATABASE_URL: the password seems to contain unencoded characters (@ # / ? %): "
        "percent-encode the password"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@host?application_name=a@b&dbname=app",
        "postgresql://host:5432/db@x",
        f"postgresql://u:{ENCODED}@host/app#",
    ],
)
def test_at_signs_outside_the_credentials_are_fine(url: str) -> None:
    assert parse_database_url(url).host == "host"


def test_sslpassword_and_other_secrets_stay_out_of_conninfo() -> None:
    params = parse_database_url(
        "postgresql://u@h/app?sslpassword=key-SECRET&password=pw-SECRET&sslmode=require",
        name="SHOP_URL",
    )
    assert params.secrets == {"sslpassword": "key-SECRET"}
    assert params.password == "pw-SECRET"
    assert "SECRET" not in params.conninfo() + repr(params)
    assert params.connect_kwargs()["sslpassword"] == "key-SECRET"
    assert params.variable == "SHOP_URL" and params.with_dbname("x").variable == "SHOP_URL"
    assert params.with_dbname("x").secrets == params.secrets
