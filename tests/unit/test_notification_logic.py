"""Pure logic of notifications: templates, incidents, Slack payloads, sparklines, advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifications.advice import DEFAULT, advice_for
from notifications.channels.base import Notification
from notifications.channels.email import parse_smtp_url
from notifications.channels.slack import slack_payload
from notifications.chart import sparkline
from notifications.incidents import file_store
from notifications.render import Renderer

ALERT = {
    "kind_label": "backup",
    "stage": "connect",
    "error": "<script>alert(1)</script> refused",
    "at": "2026-11-24 02:00:00 UTC",
    "advice": "Check it.",
    "reminder": False,
    "incident_started": "2026-11-24 02:00:00 UTC",
    "repeat_hours": "24",
    "newest_backup": "postgres_backup_20261123_020000.sql.gz",
    "newest_backup_age": "24.0 hours",
}


def test_html_is_autoescaped_and_text_is_not() -> None:
    message = Renderer().render("alert", "shop", ALERT)
    assert "&lt;script&gt;" in message.html and "<script>" not in message.html
    assert "<script>alert(1)</script>" in message.text
    assert message.subject == "bakup: backup of shop failed (connect)"


def test_a_missing_value_is_an_error_not_a_blank() -> None:
    incomplete = {key: value for key, value in ALERT.items() if key != "advice"}
    with pytest.raises(Exception, match="advice"):
        Renderer().render("alert", "shop", incomplete)


def test_custom_templates_override_and_broken_ones_fall_back(tmp_path: Path) -> None:
    (tmp_path / "alert-subject.txt").write_text("ALERT {{ database }}")
    (tmp_path / "alert-body.txt").write_text("{{ undefined_thing }}")
    (tmp_path / "alert-body.html").write_text("{% for %}")
    message = Renderer(tmp_path).render("alert", "shop", ALERT)
    assert message.subject == "ALERT shop"
    assert "failed at" in message.text and "<h2" in message.html


def test_the_sandbox_refuses_unsafe_attribute_access(tmp_path: Path) -> None:
    (tmp_path / "alert-subject.txt").write_text("{{ database.__class__.__mro__ }}")
    message = Renderer(tmp_path).render("alert", "shop", ALERT)
    assert message.subject.startswith("bakup: backup of shop")  # fell back


def test_incidents_alert_once_remind_after_the_repeat_time_and_recover(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    assert store.failed("shop", "backup", "connect", 1000, 3600).send == "alert"
    assert store.failed("shop", "backup", "connect", 2000, 3600).send is None
    reminder = store.failed("shop", "backup", "connect", 4700, 3600)
    assert reminder.send == "reminder" and reminder.started == 1000
    assert store.failed("shop", "backup", "dump", 4800, 3600).send == "alert"  # another stage
    assert store.failed("crm", "backup", "connect", 4800, 3600).send == "alert"
    recovery = store.succeeded("shop", "backup")
    assert recovery.send == "recovery" and recovery.stages == ("connect", "dump")
    assert store.succeeded("shop", "backup").send is None
    assert file_store(tmp_path).failed("crm", "backup", "connect", 4900, 3600).send is None


def test_slack_payload_has_fallback_text_and_respects_block_limits() -> None:
    long_text = "x" * 7000
    payload = slack_payload(Notification("alert", "shop", "S" * 200, long_text, "<p></p>"))
    assert payload["text"] == "S" * 200
    assert len(payload["blocks"][0]["text"]["text"]) == 150
    assert all(len(block["text"]["text"]) <= 3000 for block in payload["blocks"][1:])
    assert "".join(block["text"]["text"] for block in payload["blocks"][1:]) == long_text


def test_sparkline_shows_the_trend_and_gaps() -> None:
    assert sparkline([1, 2, 3, None, 8]) == "▁▂▃ █"
    assert sparkline([None, None]) == ""


def test_smtp_urls_are_parsed_and_errors_hide_the_password() -> None:
    server = parse_smtp_url("smtps://alerts%40example.com:p%40ss@mail.example.com")
    assert (server.host, server.port, server.implicit_tls) == ("mail.example.com", 465, True)
    assert (server.user, server.password) == ("alerts@example.com", "p@ss")
    assert "p@ss" not in repr(server)
    with pytest.raises(ValueError) as raised:
        parse_smtp_url("smtp://user:p%40ss@mail.example.com:abc")
    assert "p@ss" not in str(raised.value) and "port" in str(raised.value)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ('connection to server at "db" failed: Connection refused', "DATABASE_URL (host and port)"),
        ("pg_dump: command not found", "postgresql-client"),
        ("no space left on the device holding /b", "Free space"),
        ("something new", DEFAULT),
    ],
)
def test_advice_follows_the_troubleshooting_table(error: str, expected: str) -> None:
    assert expected in advice_for(error)
