"""A one-shot `bakup backup` (cron) that stops at its configuration still reaches the
monitoring that is itself configured validly: health check, webhook, metrics textfile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.test_faults import assert_one_line_error
from tests.support.receivers import HttpReceiver

pytestmark = pytest.mark.integration

PASSWORD = "pw-SECRET-31"


def test_a_malformed_database_url_is_reported_to_healthcheck_webhook_and_textfile(
    http: HttpReceiver, tmp_path: Path
) -> None:
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=f"postgresql://app:{PASSWORD}@db.example.com:abc/app",
        BACKUP_DIR=str(tmp_path / "b"),
        HEALTHCHECK_URL=f"{http.url}/ping/abc",
        WEBHOOK_URL=f"{http.url}/hook",
        SLACK_WEBHOOK_URL="ftp://not-a-slack-url",  # invalid: must not silence the others
        METRICS_TEXTFILE=str(textfile),
    )
    result = run_bakup("backup", env=env, timeout=120)
    assert_one_line_error(result, 2, "DATABASE_URL", "invalid port 'abc'")

    by_path = {request.path: request for request in http.requests}
    assert set(by_path) == {"/ping/abc/fail", "/hook"}
    assert b"invalid port 'abc'" in by_path["/ping/abc/fail"].body
    hook = json.loads(by_path["/hook"].body)
    assert hook["kind"] == "alert" and "invalid port 'abc'" in json.dumps(hook)
    metrics = textfile.read_text()
    assert 'bakup_backup_failures_total{database="unknown",stage="config"} 1.0' in metrics

    sent = [request.body.decode(errors="replace") for request in http.requests]
    for text in [*sent, metrics, result.stdout, result.stderr]:
        assert PASSWORD not in text


def test_a_valid_url_with_another_bad_variable_is_reported_under_its_database(
    http: HttpReceiver, tmp_path: Path
) -> None:
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=f"postgresql://app:{PASSWORD}@127.0.0.1:5432/shop",
        RETENTION_DAYS="thirty",
        BACKUP_DIR=str(tmp_path / "b"),
        HEALTHCHECK_URL=f"{http.url}/ping/abc",
        METRICS_TEXTFILE=str(textfile),
    )
    result = run_bakup("backup", env=env, timeout=120)
    assert_one_line_error(result, 2, "RETENTION_DAYS")
    assert [request.path for request in http.requests] == ["/ping/abc/fail"]
    metrics = textfile.read_text()
    assert 'bakup_backup_failures_total{database="shop",stage="config"} 1.0' in metrics
    assert PASSWORD not in metrics + http.requests[0].body.decode()


def test_an_invalid_alert_channel_still_lets_the_health_check_and_metrics_hear(
    http: HttpReceiver, small_db: Database, tmp_path: Path
) -> None:
    textfile = tmp_path / "bakup.prom"
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        SLACK_WEBHOOK_URL="ftp://not-a-slack-url",
        HEALTHCHECK_URL=f"{http.url}/ping/abc",
        METRICS_TEXTFILE=str(textfile),
    )
    result = run_bakup("backup", env=env, timeout=120)
    assert_one_line_error(result, 2, "SLACK_WEBHOOK_URL")
    assert [request.path for request in http.requests] == ["/ping/abc/fail"]
    metrics = textfile.read_text()
    label = f'database="{small_db.name}",stage="config"'
    assert f"bakup_backup_failures_total{{{label}}} 1.0" in metrics
    assert small_db.server.password not in metrics + http.requests[0].body.decode()
