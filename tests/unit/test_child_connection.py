"""What a pg_dump or pg_restore child gets: secrets only in its environment or a private
service file, never in the connection string that goes into argv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bakup.dburl import parse_database_url
from bakup.pgtools import SERVICE_NAME, child_connection


def test_without_extra_secrets_there_is_no_service_file() -> None:
    database = parse_database_url("postgresql://u:pw-SECRET@h/app")
    with child_connection(database) as connection:
        assert "SECRET" not in connection.conninfo and "service=" not in connection.conninfo
        assert connection.env["PGPASSWORD"] == "pw-SECRET"
        assert connection.pass_fds == ()


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")
def test_sslpassword_goes_to_a_service_file_that_ends_with_the_block() -> None:
    database = parse_database_url(
        "postgresql://u:pw@h/app?sslpassword=key%20SECRET&sslmode=require"
    )
    with child_connection(database) as connection:
        assert "SECRET" not in connection.conninfo
        assert connection.conninfo.endswith(f"service={SERVICE_NAME}")
        assert "sslmode=require" in connection.conninfo
        [descriptor] = connection.pass_fds
        path = Path(f"/proc/self/fd/{descriptor}")
        assert connection.env["PGSERVICEFILE"] == str(path)
        assert path.read_text() == f"[{SERVICE_NAME}]\nsslpassword=key SECRET\n"
        assert not os.get_inheritable(descriptor)  # only pass_fds hands it to the child
    with pytest.raises(OSError):
        os.fstat(descriptor)
