"""Slack incoming webhook: Block Kit blocks built in code (always valid JSON) and a plain
``text`` that mobile notifications show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from notifications.channels.base import Notification
from notifications.channels.http import post_json

SECTION_LIMIT = 3000
HEADER_LIMIT = 150


@dataclass(frozen=True)
class SlackChannel:
    """Posts notifications to a Slack incoming webhook."""

    url: str = field(repr=False)
    name: str = "slack"

    def send(self, notification: Notification) -> None:
        """Deliver ``notification``; raises DeliveryError."""
        post_json(self.url, slack_payload(notification), label="Slack webhook")


def slack_payload(notification: Notification) -> dict[str, Any]:
    """The webhook payload: a header, the text as mrkdwn sections, and the fallback text."""
    text = notification.fields.get("slack_text") or notification.text
    chunks = [text[index : index + SECTION_LIMIT] for index in range(0, len(text), SECTION_LIMIT)]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": notification.subject[:HEADER_LIMIT]},
        }
    ]
    blocks += [
        {"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in chunks[:40]
    ]
    return {"text": notification.subject, "blocks": blocks}
