"""Notification settings from the environment, every problem reported at once.

SMTP_URL, ALERT_EMAIL_FROM, ALERT_EMAIL_TO (comma-separated), SLACK_WEBHOOK_URL, WEBHOOK_URL,
WEBHOOK_SECRET, HEALTHCHECK_URL, NOTIFY_ON_SUCCESS, ALERT_REPEAT_HOURS, TEMPLATE_DIR,
SUMMARY_SCHEDULE. Secrets may come from ``<NAME>_FILE``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

from bakup.errors import ConfigError
from bakup.schedule import Schedule, ScheduleError, parse_schedule
from bakup.settings import read_secret
from notifications.channels.base import Notification
from notifications.channels.email import EmailChannel, parse_smtp_url
from notifications.channels.healthcheck import HealthcheckPing
from notifications.channels.slack import SlackChannel
from notifications.channels.webhook import WebhookChannel

DEFAULT_SUMMARY_SCHEDULE = "0 8 * * 1"


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, notification: Notification) -> None: ...


@dataclass(frozen=True)
class NotifySettings:
    """Where notifications go and when."""

    channels: tuple[Channel, ...] = ()
    healthcheck: HealthcheckPing | None = None
    notify_on_success: bool = False
    repeat_hours: float = 24.0
    template_dir: Path | None = None
    summary_schedule: Schedule = field(
        default_factory=lambda: parse_schedule(DEFAULT_SUMMARY_SCHEDULE)
    )

    @property
    def enabled(self) -> bool:
        return bool(self.channels or self.healthcheck)

    def channel(self, name: str) -> Channel:
        """The configured channel called ``name``; raises KeyError."""
        for channel in self.channels:
            if channel.name == name:
                return channel
        raise KeyError(name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotifySettings:
        """Read and check the settings; raises ConfigError listing every problem."""
        env = os.environ if env is None else env
        problems: list[str] = []
        channels: list[Channel] = []

        smtp_url = read_secret(env, "SMTP_URL", problems)
        if smtp_url:
            sender = env.get("ALERT_EMAIL_FROM", "")
            recipients = tuple(
                a.strip() for a in env.get("ALERT_EMAIL_TO", "").split(",") if a.strip()
            )
            try:
                server = parse_smtp_url(smtp_url)
            except ValueError as error:
                problems.append(str(error))
                server = None
            if not sender or "@" not in parseaddr(sender)[1]:
                problems.append("ALERT_EMAIL_FROM must be an address such as bakup@example.com")
            if not recipients or any("@" not in parseaddr(a)[1] for a in recipients):
                problems.append("ALERT_EMAIL_TO must list addresses, separated by commas")
            if server is not None and sender and recipients:
                channels.append(EmailChannel(server, sender, recipients))

        slack = read_secret(env, "SLACK_WEBHOOK_URL", problems)
        if slack:
            if not slack.startswith("https://") and not slack.startswith("http://127.0.0.1"):
                problems.append("SLACK_WEBHOOK_URL must start with https://")
            else:
                channels.append(SlackChannel(slack))

        webhook = read_secret(env, "WEBHOOK_URL", problems)
        if webhook:
            if not webhook.startswith(("http://", "https://")):
                problems.append("WEBHOOK_URL must start with http:// or https://")
            else:
                channels.append(
                    WebhookChannel(webhook, read_secret(env, "WEBHOOK_SECRET", problems) or None)
                )

        healthcheck_url = read_secret(env, "HEALTHCHECK_URL", problems)
        healthcheck = None
        if healthcheck_url:
            if not healthcheck_url.startswith(("http://", "https://")):
                problems.append("HEALTHCHECK_URL must start with http:// or https://")
            else:
                healthcheck = HealthcheckPing(healthcheck_url)

        repeat = env.get("ALERT_REPEAT_HOURS", "24").strip()
        try:
            repeat_hours = float(repeat)
            if repeat_hours <= 0:
                raise ValueError
        except ValueError:
            problems.append(f"ALERT_REPEAT_HOURS is {repeat!r}: give a positive number of hours")
            repeat_hours = 24.0

        template_dir = Path(env["TEMPLATE_DIR"]) if env.get("TEMPLATE_DIR") else None
        if template_dir is not None and not template_dir.is_dir():
            problems.append(f"TEMPLATE_DIR is {str(template_dir)!r}, which is not a directory")

        summary = parse_schedule(DEFAULT_SUMMARY_SCHEDULE)
        try:
            summary = parse_schedule(
                env.get("SUMMARY_SCHEDULE") or DEFAULT_SUMMARY_SCHEDULE, name="SUMMARY_SCHEDULE"
            )
        except ScheduleError as error:
            problems.append(str(error))

        flag = env.get("NOTIFY_ON_SUCCESS", "").strip().lower()
        if flag not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            problems.append(f"NOTIFY_ON_SUCCESS is {flag!r}: use true or false")
        if problems:
            raise ConfigError(problems)
        return cls(
            channels=tuple(channels),
            healthcheck=healthcheck,
            notify_on_success=flag in ("1", "true", "yes", "on"),
            repeat_hours=repeat_hours,
            template_dir=template_dir,
            summary_schedule=summary,
        )
