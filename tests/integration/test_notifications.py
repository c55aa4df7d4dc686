"""Alerts over real local servers: SMTP (aiosmtpd) and an HTTP server standing in for Slack,
the webhook and the dead man's switch."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.support.receivers import HttpReceiver, SmtpReceiver

pytestmark = pytest.mark.integration

SLACK_TOKEN = "T0000/B0000/slack-token-SECRET"
WEBHOOK_SECRET = "webhook-signing-SECRET"


def notify_env(
    db: Database, tmp_path: Path, smtp: SmtpReceiver, http: HttpReceiver, **extra: str
) -> dict[str, str]:
    return base_env(
        DATABASE_URL=db.url,
        BACKUP_DIR=str(tmp_path / "backups"),
        SMTP_URL=smtp.url,
        ALERT_EMAIL_FROM="bakup@example.com",
        ALERT_EMAIL_TO="ops@example.com, dba@example.com",
        SLACK_WEBHOOK_URL=f"{http.url}/slack/{SLACK_TOKEN}",
        WEBHOOK_URL=f"{http.url}/hook",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        HEALTHCHECK_URL=f"{http.url}/ping/abc",
        **extra,
    )


def paths(http: HttpReceiver) -> list[str]:
    return [request.path for request in http.requests]


def test_a_failed_backup_alerts_every_channel_once_then_recovers(
    small_db: Database, tmp_path: Path, smtp: SmtpReceiver, http: HttpReceiver
) -> None:
    env = notify_env(small_db, tmp_path, smtp, http)
    assert run_bakup("backup", env=env).returncode == 0  # a good backup to point to
    assert paths(http) == ["/ping/abc/start", "/ping/abc"]
    http.requests.clear()

    broken = {**env, "DATABASE_URL": small_db.server.url(small_db.name, password="wrong-pw-SECRET")}
    failed = run_bakup("backup", env=broken)
    assert failed.returncode == 1
    assert sorted(paths(http)) == sorted(
        ["/ping/abc/start", "/ping/abc/fail", f"/slack/{SLACK_TOKEN}", "/hook"]
    )
    [alert] = smtp.messages
    assert alert["To"] == "ops@example.com, dba@example.com"
    assert "failed" in alert["Subject"] and small_db.name in alert["Subject"]
    text = alert.get_body(("plain",)).get_content()
    html = alert.get_body(("html",)).get_content()
    for body in (text, html):
        assert "password authentication failed" in body
        assert "postgres_backup_" in body  # the newest good backup
        assert "Check the user and password in DATABASE_URL" in body
    slack = json.loads(next(r.body for r in http.requests if r.path.startswith("/slack")))
    assert slack["text"] == alert["Subject"]
    assert slack["blocks"][0]["type"] == "header"
    hook = next(r for r in http.requests if r.path == "/hook")
    expected = hmac.new(WEBHOOK_SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["X-Bakup-Signature-256"] == f"sha256={expected}"
    assert json.loads(hook.body)["kind"] == "alert"

    # The same failure again is the same incident: no new alert.
    http.requests.clear()
    assert run_bakup("backup", env=broken).returncode == 1
    assert len(smtp.messages) == 1
    assert sorted(paths(http)) == ["/ping/abc/fail", "/ping/abc/start"]

    # The first success ends it with a recovery notice.
    assert run_bakup("backup", env=env).returncode == 0
    assert len(smtp.messages) == 2 and "recovered" in smtp.messages[1]["Subject"]

    everything = [m.as_string() for m in smtp.messages] + [r.body.decode() for r in http.requests]
    everything += [failed.stdout, failed.stderr]
    for secret in ("wrong-pw-SECRET", small_db.server.password, SLACK_TOKEN, WEBHOOK_SECRET):
        for sent in everything:
            assert secret not in sent


def test_slack_429_is_retried_after_retry_after_and_404_is_not(
    small_db: Database, tmp_path: Path, smtp: SmtpReceiver, http: HttpReceiver
) -> None:
    env = notify_env(small_db, tmp_path, smtp, http, NOTIFY_ON_SUCCESS="true")
    env.pop("WEBHOOK_URL")
    env.pop("HEALTHCHECK_URL")
    http.answer((429, {"Retry-After": "1"}, b"rate_limited"), (200, {}, b"ok"))
    result = run_bakup("backup", env=env)
    assert result.returncode == 0
    assert len(http.requests) == 2  # the 429, then the retry
    assert "rate limiting" in result.stdout

    http.requests.clear()
    http.answer((404, {}, b"no_service"))
    result = run_bakup("backup", env=env)
    assert result.returncode == 0  # a notification failure never fails a backup
    assert len(http.requests) == 1  # permanent: not retried
    assert "no_service" in result.stdout
    assert len(smtp.messages) == 2  # email still went out both times


def test_a_broken_custom_template_falls_back_to_the_built_in_one(
    small_db: Database, tmp_path: Path, smtp: SmtpReceiver, http: HttpReceiver
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "success-subject.txt").write_text("Custom: {{ no_such_variable }}")
    (templates / "success-body.txt").write_text("Custom body for {{ database }}")
    env = notify_env(
        small_db, tmp_path, smtp, http, NOTIFY_ON_SUCCESS="1", TEMPLATE_DIR=str(templates)
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 0
    [message] = smtp.messages
    assert message["Subject"].startswith("bakup: backup of")  # built-in subject
    assert message.get_body(("plain",)).get_content().startswith("Custom body for")
    assert "custom template success-subject.txt failed" in result.stdout


def test_invalid_notification_settings_are_all_reported(small_db: Database, tmp_path: Path) -> None:
    env = base_env(
        DATABASE_URL=small_db.url,
        BACKUP_DIR=str(tmp_path),
        SMTP_URL="smtp://user:pw-SECRET@mail.example.com:abc",
        ALERT_EMAIL_TO="not-an-address",
        SLACK_WEBHOOK_URL="ftp://hooks.slack.com/x",
        ALERT_REPEAT_HOURS="never",
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    for name in (
        "SMTP_URL",
        "ALERT_EMAIL_FROM",
        "ALERT_EMAIL_TO",
        "SLACK_WEBHOOK_URL",
        "ALERT_REPEAT_HOURS",
    ):
        assert any(name in line for line in lines), (name, lines)
    assert "pw-SECRET" not in result.stderr
    assert not any(tmp_path.glob("postgres_backup_*"))
